package api

import (
	"crypto/sha512"
	"embed"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/hosted"
	"github.com/kluis-dev/kluis/vault"
)

// The hosted pages (docs/HOSTED.md): kluis's own link and verification
// pages on the public listener, server-rendered with html/template from
// embedded files, and the drop-in script /link.js that opens them.

//go:embed web/templates/*.html web/assets/* web/link.js
var webFiles embed.FS

// LinkJS is the drop-in script served at /link.js; LinkJSIntegrity is its
// subresource-integrity value (docs/HOSTED.md publishes it, and a test
// checks that the two agree).
var (
	LinkJS          = mustRead("web/link.js")
	LinkJSIntegrity = integrity(LinkJS)
)

func mustRead(name string) []byte {
	b, err := webFiles.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return b
}

// integrity is the SRI value of b: sha384, base64.
func integrity(b []byte) string {
	sum := sha512.Sum384(b)
	return "sha384-" + base64.StdEncoding.EncodeToString(sum[:])
}

// pageTemplates holds one template set per page: the layout and the page's
// body.
var pageTemplates = func() map[string]*template.Template {
	out := map[string]*template.Template{}
	for _, name := range []string{"link_institution", "link_login", "link_accounts", "link_plaid", "link_oauth", "done", "verify", "refused"} {
		out[name] = template.Must(template.ParseFS(webFiles, "web/templates/layout.html", "web/templates/"+name+".html"))
	}
	return out
}()

// DefaultPlaidLinkScript is Plaid Link's own script, which the Plaid step
// (and no other page) loads unless PlaidLink names another. Plaid serves
// it from this one URL and changes it without notice (it must not be
// copied or pinned), so it has no integrity value by default.
const DefaultPlaidLinkScript = "https://cdn.plaid.com/link/v2/stable/link-initialize.js"

// PlaidLink is where the hosted Plaid step loads Plaid Link from
// (KLUIS_PLAID_LINK_SCRIPT_URL, KLUIS_PLAID_LINK_SCRIPT_INTEGRITY): a test's
// stand-in or a proxy of the operator's. The Plaid step's policy allows
// the script's origin (for the script, Link's frame and its calls), on
// that page only.
type PlaidLink struct {
	// ScriptURL is the script's absolute URL (DefaultPlaidLinkScript if
	// empty).
	ScriptURL string
	// Integrity, if set, is the script's subresource-integrity value
	// (sha384-…): the page loads it with CORS and the browser refuses a
	// script that does not match.
	Integrity string
}

// script is the script's URL, defaulted.
func (p PlaidLink) script() string {
	if p.ScriptURL == "" {
		return DefaultPlaidLinkScript
	}
	return p.ScriptURL
}

// sources are the origins the Plaid step's policy adds for the script,
// Link's frame and its connections: Plaid's (whose Link calls its API
// hosts) or the configured script's own origin.
func (p PlaidLink) sources() (script, frame, connect string) {
	u, err := url.Parse(p.script())
	if err != nil || u.Host == "" {
		// A URL config checked cannot fail here; fail closed anyway.
		return "", "", ""
	}
	origin := u.Scheme + "://" + u.Host
	connect = origin
	if origin == "https://cdn.plaid.com" {
		connect = "https://*.plaid.com"
	}
	return origin, origin, connect
}

// Page modes the drop-in opens a page in.
const (
	modePopup    = "popup"
	modeIframe   = "iframe"
	modeRedirect = "redirect"
)

// Bounds on page form fields.
const (
	maxQueryLen      = 100
	maxLoginFieldLen = 128
)

// pageView is what a page template renders. Nothing secret but the public
// token of the last link step (Handoff), which the page hands to the app.
type pageView struct {
	Title, Error, Notice, Message string
	// Origin is the app's origin (checked) the page posts to; Mode how
	// the drop-in opened it; Event an onEvent name to report.
	Origin, Mode, Event string
	// Update says the session repairs an item the app has (update mode)
	// rather than linking a new one: the pages say "reconnect".
	Update bool
	// Action is the form's target (the page's own path); FormToken the
	// one-time token its forms carry.
	Action, FormToken string
	// Link steps.
	Query        string
	Institutions []banklink.Institution
	Institution  banklink.Institution
	Accounts     []banklink.ProviderAccount
	Hint         string
	Plaid        *plaidView
	Handoff      *handoffView
	// FormOrigin is another origin the page's form may lead to: an
	// OAuth provider's authorize page, which the form's answer redirects
	// to (the policy's form-action governs that redirect too).
	FormOrigin string
	// Verification.
	Code     bool
	Attempts int
	Holder   []holderField
}

type plaidView struct {
	ScriptURL, Integrity string
	LinkToken            string
}

// handoffView is the end of a link flow: what the page's script posts to
// the app (Kind "success" or "exit").
type handoffView struct {
	Kind        string
	PublicToken string
	Metadata    string
	Redirect    string
}

// holderField is one line of a BAV's holder details.
type holderField struct{ Label, Value string }

// isPageRoute says whether a route template is a hosted page's: those take
// HTML forms, not JSON (requireJSON lets them through).
func isPageRoute(route string) bool {
	switch route {
	case "/link/:id", "/verify/:id":
		return true
	}
	return false
}

// serveLinkJS serves the drop-in with CORS, so that a page of another
// origin can check its integrity hash (SRI needs a CORS-enabled fetch), and
// for a short cache time: it changes only with kluis.
func serveLinkJS(c echo.Context) error {
	h := c.Response().Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Cache-Control", "public, max-age=300")
	h.Del("Pragma")
	return c.Blob(http.StatusOK, "text/javascript; charset=utf-8", LinkJS)
}

// serveAsset serves the pages' own stylesheet and scripts (same origin
// only: no CORS header).
func serveAsset(c echo.Context) error {
	name := c.Param("name")
	b, err := fs.ReadFile(webFiles, "web/assets/"+path.Base(name))
	if err != nil || strings.Contains(name, "/") {
		return kluis.Errorf(kluis.ENotFound, "not found")
	}
	ct := "text/css; charset=utf-8"
	if strings.HasSuffix(name, ".js") {
		ct = "text/javascript; charset=utf-8"
	}
	c.Response().Header().Set("Cache-Control", "public, max-age=300")
	c.Response().Header().Del("Pragma")
	return c.Blob(http.StatusOK, ct, b)
}

// pagePolicy is what a page adds to the hosted pages' policy: the Plaid
// step its script's origin, an OAuth step its provider's authorize origin.
type pagePolicy struct {
	script, frame, connect, form string
}

// policyOf is the policy a page's view asks for.
func (d *Deps) policyOf(v pageView) pagePolicy {
	var p pagePolicy
	if v.Plaid != nil {
		p.script, p.frame, p.connect = d.PlaidLink.sources()
	}
	p.form = v.FormOrigin
	return p
}

// pageHeaders is the hosted pages' header policy: only kluis's own
// scripts and styles (Plaid Link's too on the Plaid step), forms that post
// to kluis (or redirect to an app, or on an OAuth step to the provider),
// framing by the apps' origins only, and no caching or referrer.
func (d *Deps) pageHeaders(c echo.Context, pp pagePolicy) {
	h := c.Response().Header()
	origins := d.appOrigins()
	ancestors := "'none'"
	if len(origins) > 0 {
		ancestors = strings.Join(origins, " ")
	}
	join := func(parts ...string) string { return strings.Join(strings.Fields(strings.Join(parts, " ")), " ") }
	frame := ""
	if pp.frame != "" {
		frame = "; frame-src " + pp.frame
	}
	formAction := join("'self'", pp.form, strings.Join(origins, " "))
	h.Set("Content-Security-Policy", "default-src 'none'; script-src "+join("'self'", pp.script)+"; style-src 'self'; img-src 'self'; connect-src "+join("'self'", pp.connect)+
		"; form-action "+formAction+"; frame-ancestors "+ancestors+"; base-uri 'none'"+frame)
	if len(origins) == 0 {
		h.Set("X-Frame-Options", "DENY")
	} else {
		// X-Frame-Options cannot name origins; frame-ancestors rules.
		h.Del("X-Frame-Options")
	}
	h.Set("Cache-Control", "no-store")
	// same-origin, not no-referrer: under no-referrer a browser sends
	// "Origin: null" with the page's own form posts, which sameOrigin
	// must refuse. Other sites still get no referrer.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

func (d *Deps) appOrigins() []string {
	if d.Origins == nil {
		return nil
	}
	return d.Origins.List()
}

// render writes a page.
func (d *Deps) render(c echo.Context, status int, name string, v pageView) error {
	d.pageHeaders(c, d.policyOf(v))
	var b strings.Builder
	if err := pageTemplates[name].ExecuteTemplate(&b, "layout", v); err != nil {
		return err
	}
	return c.HTMLBlob(status, []byte(b.String()))
}

// refusedPage answers a page or form token that opens nothing, a post from
// another site and an origin that is not an app's: 403, saying only that
// the page cannot be used. Other errors keep their status, in a page.
func (d *Deps) refusedPage(c echo.Context, err error) error {
	code := kluis.ErrorCode(err)
	v := pageView{Title: "This page cannot be used", Message: kluis.ErrorMessage(err)}
	switch {
	case code == hosted.CodeRefused || code == kluis.EForbidden:
		return d.render(c, http.StatusForbidden, "refused", v)
	case code == kluis.EUnavailable:
		c.Response().Header().Set("Retry-After", "5")
		v.Title, v.Message = "kluis is unavailable", "Something kluis needs is not available right now. Try again in a moment."
		return d.render(c, http.StatusServiceUnavailable, "refused", v)
	case code == kluis.EInternal:
		d.Logger.ErrorContext(c.Request().Context(), "hosted page", "request_id", requestID(c), "route", c.Path(), "cause", err.Error())
		v.Title, v.Message = "Something went wrong", "kluis could not finish this step. Go back to the app and start again."
		return d.render(c, http.StatusInternalServerError, "refused", v)
	}
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	return d.render(c, status, "refused", v)
}

// pageOrigin checks the app origin and mode the drop-in put on the page's
// URL: the origin must be one of the apps' (or absent: the page opened
// directly, with nobody to post to).
func (d *Deps) pageOrigin(q url.Values) (hosted.State, error) {
	st := hosted.State{Origin: q.Get("origin"), Mode: q.Get("mode")}
	switch st.Mode {
	case "", modePopup, modeIframe, modeRedirect:
	default:
		return st, kluis.Errorf(kluis.EForbidden, "this page was opened in a way kluis does not know")
	}
	if st.Origin != "" && (d.Origins == nil || !d.Origins.Allowed(st.Origin)) {
		return st, kluis.Errorf(kluis.EForbidden, "the app that opened this page is not one kluis is configured for")
	}
	return st, nil
}

// sameOrigin refuses a form post that a browser says came from another
// origin (Sec-Fetch-Site, sent to https origins; Origin, where "null" is a
// sandboxed or opaque sender): cross-site request forgery is stopped here
// before the form token is spent, and by the token after.
func (d *Deps) sameOrigin(c echo.Context) error {
	r := c.Request()
	site := r.Header.Get("Sec-Fetch-Site")
	origin := r.Header.Get("Origin")
	if (site != "" && site != "same-origin") || (origin != "" && origin != d.PublicURL) {
		return kluis.Errorf(kluis.EForbidden, "this form was sent from another site; kluis refused it")
	}
	return nil
}

// pageSubject is the external id of the page's subject, for its actor.
func (d *Deps) pageSubject(c echo.Context, p hosted.Page) (string, error) {
	return vault.ExternalIDOf(c.Request().Context(), d.DB.Pool, p.SubjectID)
}

// hostedURL is the URL of a hosted page with a fresh page token for the
// object (a link session or a verification) of subjectID, living
// HostedPageTTL but no longer than left (the object's own deadline).
func (d *Deps) hostedURL(c echo.Context, purpose, objectID, subjectID string, left time.Duration) (string, error) {
	ttl := d.HostedPageTTL
	if ttl <= 0 {
		ttl = hosted.DefaultTTL
	}
	if left > 0 && left < ttl {
		ttl = left
	}
	tok, _, err := d.Hosted.Issue(c.Request().Context(), purpose, objectID, subjectID, ttl)
	if err != nil {
		return "", err
	}
	return d.PublicURL + "/" + purpose + "/" + objectID + "?token=" + url.QueryEscape(tok), nil
}

// metadataJSON is the metadata a link's onSuccess receives: no secret.
func metadataJSON(sessionID string, inst banklink.Institution, accts []banklink.ProviderAccount, exitCode string) string {
	type acct struct {
		Name    string `json:"name"`
		Subtype string `json:"subtype,omitempty"`
	}
	m := struct {
		LinkSessionID string `json:"link_session_id"`
		Institution   *struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"institution,omitempty"`
		Accounts []acct         `json:"accounts,omitempty"`
		Error    map[string]any `json:"error,omitempty"`
	}{LinkSessionID: sessionID}
	if inst.ID != "" {
		m.Institution = &struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		}{inst.ID, inst.Name}
	}
	for _, a := range accts {
		m.Accounts = append(m.Accounts, acct{a.Name, a.Subtype})
	}
	if exitCode != "" {
		m.Error = map[string]any{"code": exitCode}
	}
	b, _ := json.Marshal(m)
	return string(b)
}
