package api

import (
	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidlink"
)

// AppQueryParam is the query parameter by which a compliance route that
// names a subject names the subject's app.
const AppQueryParam = "app"

// UserApp returns the app of the user of a /v1 request (the app their
// token was matched to).
func UserApp(c echo.Context) string {
	app, _ := kluis.SplitUserKey(Subject(c))
	return app
}

// linkSettings are the Plaid Link settings of the user's app.
func (d *Deps) linkSettings(c echo.Context) plaidlink.Settings {
	if app, ok := d.Apps.App(UserApp(c)); ok {
		return app.PlaidLink
	}
	return plaidlink.Settings{}
}

// subjectKey returns the user key of the subject a compliance route names
// by external id (the `sub` of their token). `?app=` names the subject's
// app; it may be left out while one app is in force, and is required (400
// naming it) once there are several: the same sub in two apps is two
// people, and staff must say which one they mean.
func (d *Deps) subjectKey(c echo.Context, external string) (string, error) {
	app, err := d.queryApp(c)
	if err != nil {
		return "", err
	}
	return kluis.UserKey(app, external), nil
}

// queryApp is the app `?app=` names, or the only app when it is left out
// and only one is in force.
func (d *Deps) queryApp(c echo.Context) (string, error) {
	named := c.QueryParam(AppQueryParam)
	set := d.Apps.Current()
	if named == "" {
		if only, ok := set.Only(); ok {
			return only.ID, nil
		}
		return "", kluis.Errorf(kluis.EInvalid, "app: the query parameter app is required: several apps are configured").With("field", AppQueryParam)
	}
	if _, ok := set.App(named); !ok {
		return "", errUnknownApp()
	}
	return named, nil
}

// errUnknownApp does not echo the value: it is the caller's.
func errUnknownApp() error {
	return kluis.Errorf(kluis.EInvalid, "app: no such app").With("field", AppQueryParam)
}
