package api

import (
	"net/http"
	"net/url"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/hosted"
)

// The hosted link page: the session's hosted_link_url opens it; the user
// chooses an institution (search by name), does the provider's own step,
// picks accounts, and the page hands the app a public token (postMessage
// to the app's origin, or a redirect back with the session id, after which
// the app's server reads the token from GET /v1/link/sessions/{id}).

// linkPage is one request's view of an opened link page.
type linkPage struct {
	page    hosted.Page
	form    string // the page's current form token
	actor   audit.Actor
	session banklink.LinkSession
}

// view starts the page's view with what every step carries.
func (lp *linkPage) view(title string) pageView {
	return pageView{Title: title, Origin: lp.page.State.Origin, Mode: lp.page.State.Mode,
		Action: "/link/" + lp.page.ObjectID, FormToken: lp.form, Update: lp.session.Mode == banklink.ModeUpdate}
}

// linkStep is one provider's part of the hosted link page. Each provider
// whose link flow kluis hosts has one (hostedSteps); a provider without one
// cannot be linked through the hosted page (the app uses its SDK).
type linkStep interface {
	// start renders the provider's first step on a newly opened page.
	start(d *Deps, c echo.Context, lp *linkPage) error
	// post handles a form post (action) of the provider's steps.
	post(d *Deps, c echo.Context, lp *linkPage, action string) error
}

// hostedSteps are the providers' hosted steps, by provider name. Stitch's
// is its OAuth redirect (hosted_oauth.go): the page sends the browser to
// Stitch, and GET /link/callback/stitch finishes on a page.
var hostedSteps = map[string]linkStep{
	"sandbox": sandboxStep{},
	"plaid":   plaidStep{},
	"stitch":  oauthStep{},
}

// Steps a link page records between posts.
const (
	stepInstitution = "institution"
	stepLogin       = "login"
	stepAccounts    = "accounts"
	stepPlaid       = "plaid"
	stepDone        = "done"
)

// openLinkPage is GET /link/{id}?token=…: the page token opens the page
// once; the session must still be open.
func (d *Deps) openLinkPage(c echo.Context) error {
	st, err := d.pageOrigin(c.QueryParams())
	if err != nil {
		return d.refusedPage(c, err)
	}
	p, form, err := d.Hosted.Open(c.Request().Context(), hosted.PurposeLink, c.Param("id"), c.QueryParam("token"), st)
	if err != nil {
		return d.refusedPage(c, err)
	}
	lp, err := d.loadLinkPage(c, p, form)
	if err != nil {
		return d.refusedPage(c, err)
	}
	step, ok := hostedSteps[lp.session.Provider]
	if !ok {
		return d.refusedPage(c, kluis.Errorf(kluis.ENotFound, "this bank provider has no hosted page: the app links through the provider's own SDK"))
	}
	if lp.session.Status != banklink.SessionCreated {
		return d.closedPage(c, lp)
	}
	return step.start(d, c, lp)
}

// postLinkPage is POST /link/{id}: a form of the page, taken once.
func (d *Deps) postLinkPage(c echo.Context) error {
	if err := d.sameOrigin(c); err != nil {
		return d.refusedPage(c, err)
	}
	p, form, err := d.Hosted.Take(c.Request().Context(), hosted.PurposeLink, c.Param("id"), c.FormValue("form_token"))
	if err != nil {
		return d.refusedPage(c, err)
	}
	lp, err := d.loadLinkPage(c, p, form)
	if err != nil {
		return d.refusedPage(c, err)
	}
	step, ok := hostedSteps[lp.session.Provider]
	if !ok || lp.session.Status != banklink.SessionCreated {
		return d.closedPage(c, lp)
	}
	action := c.FormValue("action")
	if action == "exit" {
		return d.exitLink(c, lp)
	}
	return step.post(d, c, lp, action)
}

// loadLinkPage reads the page's subject and session.
func (d *Deps) loadLinkPage(c echo.Context, p hosted.Page, form string) (*linkPage, error) {
	sub, err := d.pageSubject(c, p)
	if err != nil {
		return nil, err
	}
	lp := &linkPage{page: p, form: form, actor: audit.User(sub, requestID(c))}
	if lp.session, err = d.BankLink.LinkSession(c.Request().Context(), sub, p.ObjectID); err != nil {
		return nil, err
	}
	return lp, nil
}

// save records the page's step and state.
func (d *Deps) save(c echo.Context, lp *linkPage) error {
	return d.Hosted.Save(c.Request().Context(), lp.page, lp.form)
}

// closedPage answers a page whose session is no longer open.
func (d *Deps) closedPage(c echo.Context, lp *linkPage) error {
	v := lp.view("This link has ended")
	v.FormToken = ""
	v.Message = "This bank link is " + lp.session.Status + ". Go back to the app to start again."
	return d.render(c, http.StatusConflict, "done", v)
}

// exitLink ends the flow at the user's wish: the session is exited and
// the app told (onExit), or sent back by redirect.
func (d *Deps) exitLink(c echo.Context, lp *linkPage) error {
	if err := d.BankLink.HostedExit(c.Request().Context(), lp.actor, lp.session.ID); err != nil {
		return d.refusedPage(c, err)
	}
	return d.handoff(c, lp, "exit", "", banklink.Institution{}, nil)
}

// handoff ends a link flow: in redirect mode back to the app's
// redirect_uri with the session id and outcome (never the token); else a
// page whose script posts the outcome to the app's origin.
func (d *Deps) handoff(c echo.Context, lp *linkPage, kind, publicToken string, inst banklink.Institution, accts []banklink.ProviderAccount) error {
	lp.page.Step = stepDone
	if err := d.save(c, lp); err != nil {
		return d.refusedPage(c, err)
	}
	status := "success"
	exitCode := ""
	if kind == "exit" {
		status, exitCode = "exit", "user_exit"
	}
	redirect := ""
	if lp.page.State.Mode == modeRedirect && lp.session.RedirectURI != "" {
		redirect = withQuery(lp.session.RedirectURI, url.Values{"kluis_link_session_id": {lp.session.ID}, "kluis_status": {status}})
		d.pageHeaders(c, pagePolicy{})
		return c.Redirect(http.StatusSeeOther, redirect)
	}
	v := lp.view("Bank linked")
	v.FormToken = ""
	v.Message = "Your account is linked. You can go back to the app."
	if v.Update {
		// Update mode repaired an item the app already has (once the
		// app exchanges the token): nothing new was linked.
		v.Title, v.Message = "Bank reconnected", "Your bank connection works again. You can go back to the app."
	}
	if kind == "exit" {
		v.Title, v.Message = "Linking cancelled", "Nothing was linked. You can go back to the app."
	}
	v.Handoff = &handoffView{Kind: kind, PublicToken: publicToken, Metadata: metadataJSON(lp.session.ID, inst, accts, exitCode)}
	return d.render(c, http.StatusOK, "done", v)
}

// withQuery adds q to raw's query.
func withQuery(raw string, q url.Values) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	old := u.Query()
	for k, vs := range q {
		old[k] = vs
	}
	u.RawQuery = old.Encode()
	return u.String()
}

// sandboxStep is the sandbox's hosted flow, all on kluis's pages:
// institution (with search), login, accounts.
type sandboxStep struct{}

func (sandboxStep) start(d *Deps, c echo.Context, lp *linkPage) error {
	lp.page.Step = stepInstitution
	if err := d.save(c, lp); err != nil {
		return d.refusedPage(c, err)
	}
	return sandboxStep{}.institutions(d, c, lp, "", "OPEN")
}

func (sandboxStep) institutions(d *Deps, c echo.Context, lp *linkPage, query, event string) error {
	v := lp.view("Choose your bank")
	v.Query, v.Event = query, event
	v.Institutions = d.BankLink.HostedInstitutions(lp.session.Provider, query)
	return d.render(c, http.StatusOK, "link_institution", v)
}

func (s sandboxStep) post(d *Deps, c echo.Context, lp *linkPage, action string) error {
	switch {
	case action == "search" && lp.page.Step == stepInstitution:
		q := c.FormValue("q")
		if len(q) > maxQueryLen {
			q = q[:maxQueryLen]
		}
		return s.institutions(d, c, lp, q, "SEARCH_INSTITUTION")
	case action == "institution" && lp.page.Step == stepInstitution:
		return s.chooseInstitution(d, c, lp)
	case action == "login" && lp.page.Step == stepLogin:
		return s.login(d, c, lp)
	case action == "accounts" && lp.page.Step == stepAccounts:
		return s.accounts(d, c, lp)
	}
	return d.refusedPage(c, kluis.Errorf(kluis.EForbidden, "this form does not belong to this step of the page"))
}

// institutionOf finds the chosen institution among the provider's.
func (d *Deps) institutionOf(lp *linkPage, id string) (banklink.Institution, bool) {
	for _, in := range d.BankLink.HostedInstitutions(lp.session.Provider, "") {
		if in.ID == id {
			return in, true
		}
	}
	return banklink.Institution{}, false
}

func (s sandboxStep) chooseInstitution(d *Deps, c echo.Context, lp *linkPage) error {
	inst, ok := d.institutionOf(lp, c.FormValue("institution"))
	if !ok {
		return s.institutions(d, c, lp, "", "")
	}
	lp.page.Step, lp.page.State.InstitutionID = stepLogin, inst.ID
	if err := d.save(c, lp); err != nil {
		return d.refusedPage(c, err)
	}
	return s.loginForm(d, c, lp, inst, "", "SELECT_INSTITUTION")
}

func (sandboxStep) loginForm(d *Deps, c echo.Context, lp *linkPage, inst banklink.Institution, problem, event string) error {
	v := lp.view("Sign in to your bank")
	v.Institution, v.Error, v.Event = inst, problem, event
	v.Hint = "Sandbox bank: sign in as user_good with password pass_good."
	status := http.StatusOK
	if problem != "" {
		status = http.StatusUnprocessableEntity
	}
	return d.render(c, status, "link_login", v)
}

func (s sandboxStep) login(d *Deps, c echo.Context, lp *linkPage) error {
	inst, _ := d.institutionOf(lp, lp.page.State.InstitutionID)
	user, pass := c.FormValue("username"), c.FormValue("password")
	if user == "" || pass == "" || len(user) > maxLoginFieldLen || len(pass) > maxLoginFieldLen {
		return s.loginForm(d, c, lp, inst, "Enter your username and password.", "ERROR")
	}
	accts, err := d.BankLink.HostedLogin(c.Request().Context(), lp.actor, lp.session.ID,
		banklink.SandboxLink{InstitutionID: inst.ID, Username: user, Password: pass})
	switch kluis.ErrorCode(err) {
	case "":
	case banklink.CodeInvalidCredentials:
		return s.loginForm(d, c, lp, inst, "The username or password is incorrect. Check them and try again.", "ERROR")
	case banklink.CodeInstitutionDown:
		return s.loginForm(d, c, lp, inst, "This bank is not answering right now. Try again later, or choose another bank.", "ERROR")
	default:
		return d.refusedPage(c, err)
	}
	if lp.session.Mode == banklink.ModeUpdate {
		tok, err := d.sessionToken(c, lp)
		if err != nil {
			return d.refusedPage(c, err)
		}
		return d.handoff(c, lp, "success", tok, inst, nil)
	}
	lp.page.Step = stepAccounts
	if err := d.save(c, lp); err != nil {
		return d.refusedPage(c, err)
	}
	return s.accountsForm(d, c, lp, inst, accts, "")
}

// sessionToken is the public token of a session that succeeded.
func (d *Deps) sessionToken(c echo.Context, lp *linkPage) (string, error) {
	s, err := d.BankLink.LinkSession(c.Request().Context(), lp.actor.Name, lp.session.ID)
	if err != nil {
		return "", err
	}
	return s.PublicToken, nil
}

func (sandboxStep) accountsForm(d *Deps, c echo.Context, lp *linkPage, inst banklink.Institution, accts []banklink.ProviderAccount, problem string) error {
	v := lp.view("Choose accounts")
	v.Institution, v.Accounts, v.Error = inst, accts, problem
	status := http.StatusOK
	if problem != "" {
		status = http.StatusUnprocessableEntity
	}
	return d.render(c, status, "link_accounts", v)
}

func (s sandboxStep) accounts(d *Deps, c echo.Context, lp *linkPage) error {
	ctx := c.Request().Context()
	inst, _ := d.institutionOf(lp, lp.page.State.InstitutionID)
	offered, err := d.BankLink.HostedAccounts(ctx, lp.actor, lp.session.ID)
	if err != nil {
		return d.refusedPage(c, err)
	}
	form, err := c.FormParams()
	if err != nil {
		return d.refusedPage(c, kluis.Errorf(kluis.EInvalid, "the form could not be read"))
	}
	var picked []banklink.ProviderAccount
	var names []string
	for _, a := range offered {
		for _, n := range form["account"] {
			if n == a.Name {
				picked, names = append(picked, a), append(names, a.Name)
				break
			}
		}
	}
	if len(names) == 0 {
		return s.accountsForm(d, c, lp, inst, offered, "Choose at least one account to share.")
	}
	tok, err := d.BankLink.HostedFinish(ctx, lp.actor, lp.session.ID, names)
	if err != nil {
		return d.refusedPage(c, err)
	}
	return d.handoff(c, lp, "success", tok, inst, picked)
}

// plaidStep runs Plaid Link in the page: Plaid's script, the session's
// link token, and the public token Plaid returns posted back in the form.
type plaidStep struct{}

func (plaidStep) start(d *Deps, c echo.Context, lp *linkPage) error {
	lt, err := d.BankLink.HostedLinkToken(c.Request().Context(), lp.actor, lp.session.ID)
	if err != nil {
		return d.refusedPage(c, err)
	}
	lp.page.Step = stepPlaid
	if err := d.save(c, lp); err != nil {
		return d.refusedPage(c, err)
	}
	v := lp.view("Link your bank")
	v.Event = "OPEN"
	v.Plaid = &plaidView{ScriptURL: d.PlaidLink.script(), Integrity: d.PlaidLink.Integrity, LinkToken: lt}
	return d.render(c, http.StatusOK, "link_plaid", v)
}

func (plaidStep) post(d *Deps, c echo.Context, lp *linkPage, action string) error {
	if action != "plaid" || lp.page.Step != stepPlaid {
		return d.refusedPage(c, kluis.Errorf(kluis.EForbidden, "this form does not belong to this step of the page"))
	}
	tok := c.FormValue("public_token")
	if err := d.BankLink.HostedProviderToken(c.Request().Context(), lp.actor, lp.session.ID, tok); err != nil {
		return d.refusedPage(c, err)
	}
	return d.handoff(c, lp, "success", tok, banklink.Institution{}, nil)
}

// linkSessionView is GET /v1/link/sessions/{id}'s answer: the session, its
// public token while it has one to give, and a fresh hosted_link_url while
// it is open.
type linkSessionView struct {
	linkSessionJSON
	PublicToken string `json:"public_token,omitempty"`
}

// getLinkSession is GET /v1/link/sessions/{id}.
func (d *Deps) getLinkSession(c echo.Context) error {
	s, err := d.BankLink.LinkSession(c.Request().Context(), Subject(c), c.Param("id"))
	if err != nil {
		return err
	}
	out := linkSessionView{linkSessionJSON: linkSessionJSON{ID: s.ID, Status: s.Status, Mode: s.Mode, ItemID: s.ItemID,
		Provider: s.Provider, ExpiresAt: s.ExpiresAt.UTC(), RedirectURI: s.RedirectURI}, PublicToken: s.PublicToken}
	if s.Status == banklink.SessionCreated {
		if out.HostedLinkURL, err = d.linkURL(c, s); err != nil {
			return err
		}
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, out)
}

// linkURL is a session's hosted_link_url ("" without hosted pages or for
// a provider without a hosted step). The page token lives no longer than
// the session.
func (d *Deps) linkURL(c echo.Context, s banklink.LinkSession) (string, error) {
	if d.Hosted == nil || hostedSteps[s.Provider] == nil {
		return "", nil
	}
	return d.hostedURL(c, hosted.PurposeLink, s.ID, s.SubjectID, time.Until(s.ExpiresAt))
}

// checkRedirectURI accepts "" or a URL whose origin is one of the apps'.
func (d *Deps) checkRedirectURI(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	var origin string
	if err == nil {
		origin, err = config.CanonicalOrigin(u.Scheme + "://" + u.Host)
	}
	if err != nil || d.Origins == nil || !d.Origins.Allowed(origin) {
		return kluis.Errorf(kluis.EInvalid, "redirect_uri: must be a URL of one of the app origins kluis is configured for (KLUIS_APP_ORIGINS)")
	}
	return nil
}
