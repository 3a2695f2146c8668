package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
)

// maxCallbackQuery bounds the callback's query string.
const maxCallbackQuery = 4096

// oauthCallbackJSON is the callback's answer to an app that drives the
// redirect itself (it sent the user to the session's link_token): the
// session and, once the user authorized kluis, the public token the app
// exchanges (as any provider's). A session whose hosted link page sent the
// browser to the provider gets a page instead (hostedCallback).
type oauthCallbackJSON struct {
	LinkSessionID string `json:"link_session_id"`
	Status        string `json:"status"`
	PublicToken   string `json:"public_token,omitempty"`
}

// oauthCallback is GET /link/callback/{provider}: an OAuth provider
// (Stitch) sends the user's browser back here with the authorization code
// and the state kluis gave it. No user token: the state, which only kluis
// can make, names the link session. The answer is no-store (as every
// answer) and never carries the code.
//
// Page or JSON is chosen by the session, not by Accept: a session whose
// hosted link page sent the browser to the provider is finished on a page
// (the done page hands the app the public token by postMessage, or a
// redirect to the app's redirect_uri), and only with the cookie that page
// set; any other session answers JSON as before. An Accept header could
// be set by whoever sends the request, the session's page cannot.
func (d *Deps) oauthCallback(c echo.Context) error {
	if len(c.Request().URL.RawQuery) > maxCallbackQuery {
		return kluis.Errorf(kluis.EInvalid, "the callback's query is too long")
	}
	if done, err := d.hostedCallback(c); done {
		return err
	}
	res, err := d.BankLink.CompleteOAuthCallback(c.Request().Context(), c.Param("provider"),
		c.Request().URL.Query(), requestID(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, oauthCallbackJSON{LinkSessionID: res.SessionID, Status: res.Status, PublicToken: res.PublicToken})
}
