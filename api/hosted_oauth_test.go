package api_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// oauthPage opens a Stitch session's hosted page in mode and sends the
// browser on to Stitch: it returns the session, the authorize URL the page
// redirected to and the binding cookie it set.
func (he *hostedEnv) oauthPage(t *testing.T, tok, mode, body string) (string, string, *http.Cookie) {
	t.Helper()
	id, link := he.linkSession(t, tok, body)
	status, h, page := he.do(t, "GET", link+"&mode="+mode+"&origin="+url.QueryEscape(he.AppOrigin), "", "", "", nil)
	if status != 200 || !strings.Contains(page, "Continue to Stitch") {
		t.Fatalf("the Stitch step: %d\n%s", status, page)
	}
	csp := h.Get("Content-Security-Policy")
	if !strings.Contains(csp, "form-action 'self' "+he.stitch.URL+" "+he.AppOrigin+";") || !strings.Contains(csp, "script-src 'self';") {
		t.Errorf("the Stitch step's policy %q: its form must be allowed to lead to Stitch, and no other script", csp)
	}
	status, h, _ = he.do(t, "POST", "/link/"+id, "", "application/x-www-form-urlencoded",
		url.Values{"form_token": {formToken(t, page)}, "action": {"oauth"}}.Encode(), nil)
	to := h.Get("Location")
	if status != 303 || !strings.HasPrefix(to, he.stitch.URL+"/connect/authorize?") {
		t.Fatalf("continue to Stitch: %d, Location %q", status, to)
	}
	if strings.Contains(to, "kpt_") || strings.Contains(to, "kft_") || strings.Contains(to, "token") {
		t.Errorf("the authorize URL carries one of kluis's tokens: %s", to)
	}
	q, _ := url.ParseQuery(to[strings.Index(to, "?")+1:])
	if !strings.HasPrefix(q.Get("state"), id+".") || q.Get("code_challenge_method") != "S256" {
		t.Errorf("the authorize URL's state %q is not the session's, or no PKCE", q.Get("state"))
	}
	var ck *http.Cookie
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == "kluis_oauth_"+id {
			ck = c
		}
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/" || !strings.HasPrefix(ck.Value, "kft_") {
		t.Fatalf("the page set no binding cookie, or a weak one: %v", h.Values("Set-Cookie"))
	}
	return id, to, ck
}

// callback follows Stitch's redirect back to kluis with cookies.
func (he *hostedEnv) callback(t *testing.T, redirect string, cookies ...*http.Cookie) (int, http.Header, string) {
	t.Helper()
	if !strings.HasPrefix(redirect, he.KluisURL+"/link/callback/stitch?") {
		t.Fatalf("Stitch sent the browser to %q, not kluis's callback", redirect)
	}
	var hdr http.Header
	if len(cookies) > 0 {
		var parts []string
		for _, c := range cookies {
			parts = append(parts, c.Name+"="+c.Value)
		}
		hdr = http.Header{"Cookie": {strings.Join(parts, "; ")}}
	}
	return he.do(t, "GET", strings.TrimPrefix(redirect, he.KluisURL), "", "", "", hdr)
}

func (he *hostedEnv) sessionStatus(t *testing.T, id string) string {
	t.Helper()
	var s string
	if err := he.DB.Pool.QueryRow(context.Background(), `SELECT status FROM link_sessions WHERE id = $1`, id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTheHostedStitchStepSendsTheBrowserToStitchAndFinishesOnAPageInThatBrowserOnly(t *testing.T) {
	he := startHosted(t, "127.0.0.1", "https://app.example.com")
	tok := userToken(t, "user-hosted-stitch")
	id, to, ck := he.oauthPage(t, tok, "popup", `{"products":["auth"],"provider":"stitch"}`)
	back, err := he.stitch.Authorize(to)
	if err != nil {
		t.Fatal(err)
	}

	// Another browser (no cookie: a victim lured to authorize this
	// session at Stitch) is refused, and nothing changes.
	if status, _, body := he.callback(t, back); status != 403 || !strings.Contains(body, "This page cannot be used") {
		t.Fatalf("a callback without the page's cookie: %d\n%s", status, body)
	}
	if s := he.sessionStatus(t, id); s != "created" {
		t.Fatalf("a refused callback moved the session to %s", s)
	}
	forged := &http.Cookie{Name: ck.Name, Value: "kft_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
	if status, _, _ := he.callback(t, back, forged); status != 403 {
		t.Fatalf("a callback with a forged cookie: %d", status)
	}

	// Another site sends the user's browser (with its cookie) to the
	// callback with a state kluis did not make: refused before the
	// cookie's token is taken, so the real return still works.
	bad := he.KluisURL + "/link/callback/stitch?" + url.Values{"state": {id + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, "code": {"x"}}.Encode()
	if status, _, _ := he.callback(t, bad, ck); status != 400 {
		t.Fatalf("a callback with a forged state: %d, want 400", status)
	}

	// The browser that left: the done page hands the app the public token.
	status, h, body := he.callback(t, back, ck)
	if status != 200 || !strings.Contains(body, `data-handoff="success"`) || !strings.Contains(h.Get("Content-Type"), "text/html") {
		t.Fatalf("the callback in the page's browser: %d\n%s", status, body)
	}
	if !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors https://app.example.com;") || h.Get("Cache-Control") != "no-store" {
		t.Errorf("the callback's page lacks the pages' policy: %v", h)
	}
	if sc := strings.Join(h.Values("Set-Cookie"), "\n"); !strings.Contains(sc, ck.Name+"=;") || !strings.Contains(sc, "Max-Age=0") {
		t.Errorf("the callback did not clear the binding cookie: %q", sc)
	}
	status, _, resp := he.do(t, "GET", "/v1/link/sessions/"+id, tok, "", "", nil)
	var s struct {
		Status      string `json:"status"`
		PublicToken string `json:"public_token"`
	}
	want(t, status, 200, resp, &s)
	if s.Status != "succeeded" || s.PublicToken == "" || !strings.Contains(body, `data-public-token="`+s.PublicToken+`"`) {
		t.Fatalf("session %+v; the page handed another token", s)
	}
	// Replayed, the callback opens nothing more.
	if status, _, _ := he.callback(t, back, ck); status != 403 {
		t.Errorf("a replayed callback: %d, want 403", status)
	}
	status, _, resp = he.do(t, "POST", "/v1/link/sessions/"+id+"/exchange", tok, "application/json", `{"public_token":"`+s.PublicToken+`"}`, nil)
	var ex struct {
		Item itemBody `json:"item"`
	}
	want(t, status, 201, resp, &ex)
	if len(ex.Item.Accounts) == 0 {
		t.Fatalf("the Stitch item has no accounts: %+v", ex.Item)
	}

	// A user who declines at Stitch: the app hears onExit.
	id, to, ck = he.oauthPage(t, tok, "popup", `{"products":["auth"],"provider":"stitch"}`)
	back, err = he.stitch.Decline(to)
	if err != nil {
		t.Fatal(err)
	}
	if status, _, body := he.callback(t, back, ck); status != 200 || !strings.Contains(body, `data-handoff="exit"`) || he.sessionStatus(t, id) != "exited" {
		t.Fatalf("a declined authorization: %d %s\n%s", status, he.sessionStatus(t, id), body)
	}

	// By redirect: back to the app with the session id, never the token;
	// the app's server reads the token from the session.
	id, to, ck = he.oauthPage(t, tok, "redirect", `{"products":["auth"],"provider":"stitch","redirect_uri":"https://app.example.com/back"}`)
	back, _ = he.stitch.Authorize(to)
	status, h, _ = he.callback(t, back, ck)
	if loc := h.Get("Location"); status != 303 || !strings.HasPrefix(loc, "https://app.example.com/back?") ||
		!strings.Contains(loc, "kluis_link_session_id="+id) || strings.Contains(loc, "token") || strings.Contains(loc, "code") {
		t.Fatalf("the redirect back: %d %q", status, loc)
	}
	_, _, resp = he.do(t, "GET", "/v1/link/sessions/"+id, tok, "", "", nil)
	if !strings.Contains(resp, `"public_token"`) {
		t.Errorf("after the redirect flow the session gives no public token: %s", resp)
	}

	// In a frame the step offers no way to Stitch, and its form is refused.
	id, link := he.linkSession(t, tok, `{"provider":"stitch"}`)
	_, _, page := he.do(t, "GET", link+"&mode=iframe&origin="+url.QueryEscape(he.AppOrigin), "", "", "", nil)
	if !strings.Contains(page, `role="alert"`) || strings.Contains(page, `value="oauth"`) {
		t.Errorf("the Stitch step in a frame:\n%s", page)
	}
	if status, _, _ := he.do(t, "POST", "/link/"+id, "", "application/x-www-form-urlencoded",
		url.Values{"form_token": {formToken(t, page)}, "action": {"oauth"}}.Encode(), nil); status != 403 {
		t.Errorf("continue to Stitch from a frame: %d, want 403", status)
	}

	// An app that drives Stitch itself (the session's link_token, no
	// hosted page) still gets the callback's JSON.
	status, _, resp = he.do(t, "POST", "/v1/link/sessions", tok, "application/json", `{"products":["auth"],"provider":"stitch"}`, nil)
	var own struct {
		ID        string `json:"id"`
		LinkToken string `json:"link_token"`
	}
	want(t, status, 201, resp, &own)
	back, err = he.stitch.Authorize(own.LinkToken)
	if err != nil {
		t.Fatal(err)
	}
	status, h, resp = he.callback(t, back)
	if status != 200 || !strings.HasPrefix(h.Get("Content-Type"), "application/json") || !strings.Contains(resp, `"public_token"`) {
		t.Fatalf("the callback of an app's own redirect: %d %s", status, resp)
	}
	// Its token is in that answer only: the session's owner cannot read
	// it back (had the owner lured someone else to the authorize URL, the
	// token stays in that person's browser).
	if _, _, resp := he.do(t, "GET", "/v1/link/sessions/"+own.ID, tok, "", "", nil); strings.Contains(resp, "public_token") {
		t.Errorf("the session of an app's own redirect gives its token back: %s", resp)
	}
}
