package api

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/hosted"
)

// The hosted page's OAuth step (Stitch): the page sends the browser to the
// provider's authorize URL (banklink.Service.AuthorizeURL: state bound to
// the link session, PKCE derived from it) and the provider sends it back
// to GET /link/callback/{provider}, which finishes the flow on a page
// (oauthCallback). The callback must come back to the browser that left:
// when the page sends it away it sets a cookie holding the page's current
// form token (HttpOnly, SameSite=Lax, __Host- and Secure on https), and the
// callback takes that token as it takes a form's. A callback with a state
// of a hosted session but without the cookie (another browser: a victim
// lured to authorize an attacker's session) is refused and changes
// nothing.

// Steps of the OAuth flow a link page records.
const (
	// stepOAuth: the page that explains the provider's step is shown.
	stepOAuth = "oauth"
	// stepAuthorize: the browser went to the provider; the callback is
	// expected.
	stepAuthorize = "authorize"
)

// oauthNames are the OAuth providers whose step kluis hosts, by provider
// name, with the name the page shows.
var oauthNames = map[string]string{"stitch": "Stitch"}

// oauthStep is an OAuth provider's hosted step.
type oauthStep struct{}

// inst is the provider as the page names it.
func (oauthStep) inst(lp *linkPage) banklink.Institution {
	return banklink.Institution{ID: lp.session.Provider, Name: oauthNames[lp.session.Provider]}
}

func (s oauthStep) start(d *Deps, c echo.Context, lp *linkPage) error {
	lp.page.Step = stepOAuth
	if err := d.save(c, lp); err != nil {
		return d.refusedPage(c, err)
	}
	return s.page(d, c, lp, "OPEN")
}

// page shows the step: what happens next and the button that leaves for
// the provider. In a frame it offers no button: a bank's sign-in does not
// belong inside another site's page (banks refuse to be framed, and the
// user could not see the address they sign in at), so the app must open
// kluis in a popup or by redirect.
func (s oauthStep) page(d *Deps, c echo.Context, lp *linkPage, event string) error {
	v := lp.view("Continue to your bank")
	if v.Update {
		v.Title = "Reconnect your bank"
	}
	v.Institution, v.Event = s.inst(lp), event
	if lp.page.State.Mode == modeIframe {
		v.Error = "This bank connection cannot open inside the app's page. Go back to the app and choose to open it in a new window."
		v.Event = "ERROR"
		return d.render(c, http.StatusOK, "link_oauth", v)
	}
	to, err := d.BankLink.AuthorizeURL(c.Request().Context(), lp.session.ID)
	if err != nil {
		return d.refusedPage(c, err)
	}
	if v.FormOrigin = originOf(to); v.FormOrigin == "" {
		return d.refusedPage(c, kluis.Errorf(kluis.EInternal, "the provider's authorize URL is not absolute"))
	}
	return d.render(c, http.StatusOK, "link_oauth", v)
}

// originOf is an absolute URL's origin ("" if it has none).
func originOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

func (s oauthStep) post(d *Deps, c echo.Context, lp *linkPage, action string) error {
	if action != "oauth" || lp.page.Step != stepOAuth || lp.page.State.Mode == modeIframe {
		return d.refusedPage(c, kluis.Errorf(kluis.EForbidden, "this form does not belong to this step of the page"))
	}
	to, err := d.BankLink.AuthorizeURL(c.Request().Context(), lp.session.ID)
	if err != nil {
		return d.refusedPage(c, err)
	}
	lp.page.Step, lp.page.State.SentTo = stepAuthorize, lp.session.Provider
	if err := d.save(c, lp); err != nil {
		return d.refusedPage(c, err)
	}
	d.setOAuthCookie(c, lp)
	d.pageHeaders(c, pagePolicy{form: originOf(to)})
	return c.Redirect(http.StatusSeeOther, to)
}

// oauthCookie is the name of the cookie that binds a session's OAuth
// callback to the browser its page sent away: one per session, so that
// two flows in one browser do not undo each other.
func (d *Deps) oauthCookie(sessionID string) string {
	if d.secureCookies() {
		return "__Host-kluis_oauth_" + sessionID
	}
	return "kluis_oauth_" + sessionID
}

// secureCookies says whether the public listener is https (always in
// production): cookies are then Secure and __Host-.
func (d *Deps) secureCookies() bool { return strings.HasPrefix(d.PublicURL, "https://") }

// setOAuthCookie sets the binding cookie to the page's current form
// token, for as long as the page lives.
func (d *Deps) setOAuthCookie(c echo.Context, lp *linkPage) {
	age := time.Until(lp.page.ExpiresAt)
	if age < time.Second {
		age = time.Second
	}
	c.SetCookie(&http.Cookie{Name: d.oauthCookie(lp.session.ID), Value: lp.form, Path: "/",
		MaxAge: int(age / time.Second), HttpOnly: true, Secure: d.secureCookies(), SameSite: http.SameSiteLaxMode})
}

// clearOAuthCookie removes the binding cookie.
func (d *Deps) clearOAuthCookie(c echo.Context, sessionID string) {
	c.SetCookie(&http.Cookie{Name: d.oauthCookie(sessionID), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: d.secureCookies(), SameSite: http.SameSiteLaxMode})
}

// hostedCallback finishes an OAuth callback on a page when the state names
// a link session whose hosted page sent the browser to the provider (ever:
// a replayed callback gets a refusal page, not JSON); it
// reports false (and does nothing) for any other callback, which keeps the
// JSON answer of apps that drive the redirect themselves.
func (d *Deps) hostedCallback(c echo.Context) (bool, error) {
	if d.Hosted == nil {
		return false, nil
	}
	ctx := c.Request().Context()
	// The state's MAC is checked before the page's cookie is taken, so
	// that a forged state (sent through the user's browser by another
	// site) cannot spend it; a bad state gets the JSON path's 400.
	id, err := d.BankLink.OAuthSession(c.QueryParam("state"))
	if err != nil {
		return false, nil
	}
	away, err := d.Hosted.SentAway(ctx, hosted.PurposeLink, id)
	if err != nil {
		return true, d.refusedPage(c, err)
	}
	if !away {
		return false, nil
	}
	name := d.oauthCookie(id)
	d.clearOAuthCookie(c, id)
	ck, err := c.Cookie(name)
	if err != nil {
		return true, d.refusedPage(c, kluis.Errorf(hosted.CodeRefused, "this page has expired or was already used: go back to the app and start again"))
	}
	p, form, err := d.Hosted.Take(ctx, hosted.PurposeLink, id, ck.Value)
	if err != nil {
		return true, d.refusedPage(c, err)
	}
	if p.Step != stepAuthorize {
		return true, d.refusedPage(c, kluis.Errorf(kluis.EForbidden, "this page is not waiting for the bank"))
	}
	lp, err := d.loadLinkPage(c, p, form)
	if err != nil {
		return true, d.refusedPage(c, err)
	}
	res, err := d.BankLink.CompleteHostedOAuthCallback(ctx, c.Param("provider"), c.QueryParams(), requestID(c))
	if err != nil {
		return true, d.refusedPage(c, err)
	}
	// The institution is chosen at the provider: the app learns it from
	// the exchange, so the metadata names none.
	if res.Status == banklink.SessionExited {
		return true, d.handoff(c, lp, "exit", "", banklink.Institution{}, nil)
	}
	return true, d.handoff(c, lp, "success", res.PublicToken, banklink.Institution{}, nil)
}
