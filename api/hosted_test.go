package api_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
	"github.com/kluis-dev/kluis/banklink/sandbox"
	"github.com/kluis-dev/kluis/banklink/stitch"
	"github.com/kluis-dev/kluis/banklink/stitch/stitchtest"
	"github.com/kluis-dev/kluis/hosted"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
	"github.com/kluis-dev/kluis/verification/sandboxrail"
)

// hostedEnv is kluis with bank linking (the sandbox, the default; Stitch
// and Plaid against their in-test servers), verification and hosted
// pages, served (besides apitest's own listener) on a listener whose
// address is known before Deps is built, so that PublicURL names it:
// browser tests reach it as http://kluis.test:PORT (Chromium maps *.test
// to 127.0.0.1).
type hostedEnv struct {
	*apitest.Env
	// KluisURL is the public listener as a browser names it; Direct is
	// the same listener by address (for the test's own HTTP calls).
	KluisURL, Direct string
	AppOrigin        string
	stitch           *stitchtest.Server
	plaid            *plaidtest.Server
	// policies are the Content-Security-Policy of each path's last answer.
	policies sync.Map
}

// policy is the Content-Security-Policy of path's last answer.
func (he *hostedEnv) policy(path string) string {
	v, _ := he.policies.Load(path)
	s, _ := v.(string)
	return s
}

// startHosted starts kluis with hosted pages; appOrigin is the one
// configured app origin. The public listener's origin is http://host:port
// with host "kluis.test" (browser tests) or "127.0.0.1". opts change Deps
// last.
func startHosted(t *testing.T, host, appOrigin string, opts ...func(*api.Deps)) *hostedEnv {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	he := &hostedEnv{KluisURL: "http://" + host + ":" + strconv.Itoa(port), Direct: "http://" + ln.Addr().String(), AppOrigin: appOrigin,
		stitch: stitchtest.NewServer(t, stitchtest.WithConsentPage()), plaid: plaidtest.NewServer(t)}
	he.stitch.RegisterRedirect(he.KluisURL + "/link/callback/stitch")
	he.Env = apitest.Start(t, func(d *api.Deps) {
		keys := d.Pseudonyms.(*vault.SystemKeys)
		sb, err := sandbox.New(sandbox.Options{DB: d.DB, Secret: sandboxSecret})
		if err != nil {
			t.Fatal(err)
		}
		st, err := stitch.New(stitch.Options{ClientID: stitchtest.ClientID, ClientSecret: stitchtest.ClientSecret,
			BaseURL: he.stitch.URL, AuthURL: he.stitch.URL, RedirectURI: he.KluisURL + "/link/callback/stitch", WebhookSecret: stitchtest.WebhookSecret})
		if err != nil {
			t.Fatal(err)
		}
		pl, err := plaid.New(plaid.Options{ClientID: he.plaid.ClientID, Secret: he.plaid.Secret, BaseURL: he.plaid.URL, MaxRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		providers, err := banklink.NewProviders(sb, st, pl)
		if err != nil {
			t.Fatal(err)
		}
		if d.BankLink, err = banklink.New(banklink.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Providers: providers, Keys: keys, Logger: d.Logger}); err != nil {
			t.Fatal(err)
		}
		if d.Verification, err = verification.New(verification.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Accounts: banklink.NewAccountStore(d.DB), Keys: keys,
			Rail: sandboxrail.New(d.DB, keys, 0, nil), Logger: d.Logger}); err != nil {
			t.Fatal(err)
		}
		d.Hosted = hosted.NewStore(d.DB, keys, nil)
		d.PublicURL = he.KluisURL
		d.Origins = api.StaticOrigins{appOrigin}
		for _, o := range opts {
			o(d)
		}
	})
	record := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		he.PublicEcho.ServeHTTP(w, r)
		he.policies.Store(r.URL.Path, w.Header().Get("Content-Security-Policy"))
	})
	srv := &http.Server{Handler: record, ReadHeaderTimeout: 10e9}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return he
}

// do sends a request to the hosted listener by address.
func (he *hostedEnv) do(t *testing.T, method, path, token, contentType, body string, header http.Header) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, he.Direct+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// linkSession creates a link session and returns its id and hosted URL
// (path and query, relative to the listener).
func (he *hostedEnv) linkSession(t *testing.T, tok, body string) (string, string) {
	t.Helper()
	status, _, resp := he.do(t, "POST", "/v1/link/sessions", tok, "application/json", body, nil)
	var s struct {
		ID            string `json:"id"`
		HostedLinkURL string `json:"hosted_link_url"`
	}
	want(t, status, 201, resp, &s)
	if !strings.HasPrefix(s.HostedLinkURL, he.KluisURL+"/link/"+s.ID+"?token=kpt_") {
		t.Fatalf("hosted_link_url = %q, want %s/link/%s?token=kpt_…", s.HostedLinkURL, he.KluisURL, s.ID)
	}
	return s.ID, strings.TrimPrefix(s.HostedLinkURL, he.KluisURL)
}

var formTokenRE = regexp.MustCompile(`name="form_token" value="(kft_[A-Za-z0-9_-]+)"`)

// formToken is the page's current form token.
func formToken(t *testing.T, page string) string {
	t.Helper()
	m := formTokenRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no form token in the page:\n%s", page)
	}
	return m[1]
}

// post posts a page form (no Origin header: not a browser).
func (he *hostedEnv) post(t *testing.T, path string, form url.Values, header http.Header) (int, string) {
	t.Helper()
	status, _, body := he.do(t, "POST", path, "", "application/x-www-form-urlencoded", form.Encode(), header)
	return status, body
}

func TestTheHostedLinkPageLinksASandboxAccountAndRefusesReplaysAndCrossSitePosts(t *testing.T) {
	he := startHosted(t, "127.0.0.1", "https://app.example.com")
	tok := userToken(t, "user-hosted-http")
	id, link := he.linkSession(t, tok, `{"products":["auth"]}`)
	page := "/link/" + id

	status, h, body := he.do(t, "GET", link, "", "", "", nil)
	if status != 200 || !strings.Contains(body, "Choose your bank") {
		t.Fatalf("open: %d\n%s", status, body)
	}
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"script-src 'self';", "frame-ancestors https://app.example.com;", "form-action 'self' https://app.example.com;"} {
		if !strings.Contains(csp, want) {
			t.Errorf("page CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "style=") || strings.Contains(body, " on") && regexp.MustCompile(` on[a-z]+=`).MatchString(body) {
		t.Errorf("the page has inline script or style:\n%s", body)
	}
	if s, _, _ := he.do(t, "GET", link, "", "", "", nil); s != 403 {
		t.Errorf("the page token opened the page twice: %d", s)
	}

	t1 := formToken(t, body)
	status, body = he.post(t, page, url.Values{"form_token": {t1}, "action": {"search"}, "q": {"credit"}}, nil)
	if status != 200 || !strings.Contains(body, "Sandbox Credit Union") || strings.Contains(body, ">Sandbox Bank<") {
		t.Fatalf("search: %d\n%s", status, body)
	}
	if s, _ := he.post(t, page, url.Values{"form_token": {t1}, "action": {"search"}, "q": {""}}, nil); s != 403 {
		t.Errorf("a replayed form answered %d, want 403", s)
	}
	t2 := formToken(t, body)
	cross := http.Header{"Origin": {"https://evil.example"}, "Sec-Fetch-Site": {"cross-site"}}
	if s, _ := he.post(t, page, url.Values{"form_token": {t2}, "action": {"institution"}, "institution": {sandbox.InstitutionAuth}}, cross); s != 403 {
		t.Errorf("a cross-site post answered %d, want 403", s)
	}
	status, body = he.post(t, page, url.Values{"form_token": {t2}, "action": {"institution"}, "institution": {sandbox.InstitutionAuth}}, nil)
	if status != 200 || !strings.Contains(body, "Sign in to your bank") {
		t.Fatalf("choose: %d\n%s", status, body)
	}
	status, body = he.post(t, page, url.Values{"form_token": {formToken(t, body)}, "action": {"login"}, "username": {"user_good"}, "password": {"wrong"}}, nil)
	if status != 422 || !strings.Contains(body, `role="alert"`) {
		t.Fatalf("bad login: %d\n%s", status, body)
	}
	status, body = he.post(t, page, url.Values{"form_token": {formToken(t, body)}, "action": {"login"}, "username": {"user_good"}, "password": {"pass_good"}}, nil)
	if status != 200 || !strings.Contains(body, "Choose accounts") {
		t.Fatalf("login: %d\n%s", status, body)
	}
	status, body = he.post(t, page, url.Values{"form_token": {formToken(t, body)}, "action": {"accounts"}, "account": {"Sandbox checking 1"}}, nil)
	if status != 200 || !strings.Contains(body, `data-handoff="success"`) {
		t.Fatalf("accounts: %d\n%s", status, body)
	}

	// The app that came back by redirect reads the public token once the
	// session succeeded; the exchange brings the one account picked.
	status, _, resp := he.do(t, "GET", "/v1/link/sessions/"+id, tok, "", "", nil)
	var s struct {
		Status      string `json:"status"`
		PublicToken string `json:"public_token"`
	}
	want(t, status, 200, resp, &s)
	if s.Status != "succeeded" || !strings.Contains(body, s.PublicToken) {
		t.Fatalf("session %+v; the page handed another token", s)
	}
	status, _, resp = he.do(t, "POST", "/v1/link/sessions/"+id+"/exchange", tok, "application/json", `{"public_token":"`+s.PublicToken+`"}`, nil)
	var ex struct {
		Item itemBody `json:"item"`
	}
	want(t, status, 201, resp, &ex)
	if len(ex.Item.Accounts) != 1 || ex.Item.Accounts[0].Name != "Sandbox checking 1" {
		t.Fatalf("accounts = %+v, want the checking account alone", ex.Item.Accounts)
	}
	status, _, resp = he.do(t, "GET", "/v1/link/sessions/"+id, tok, "", "", nil)
	if strings.Contains(resp, "public_token") || status != 200 {
		t.Fatalf("an exchanged session still gives its token: %d %s", status, resp)
	}
	var n int
	if err := he.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM link_sessions WHERE public_token_sealed IS NOT NULL`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d sealed public tokens left after the exchange (%v)", n, err)
	}
}

func TestPageTokensThatAreWrongExpiredOrForAnotherPageOpenNothing(t *testing.T) {
	he := startHosted(t, "127.0.0.1", "https://app.example.com")
	tok := userToken(t, "user-hosted-tokens")
	id, link := he.linkSession(t, tok, `{}`)
	other, _ := he.linkSession(t, tok, `{}`)
	q := link[strings.Index(link, "?"):]
	for name, path := range map[string]string{
		"a wrong token":                   "/link/" + id + "?token=kpt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"no token":                        "/link/" + id,
		"the token of another session":    "/link/" + other + q,
		"a link token on the verify page": "/verify/ver_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" + q,
		"an app origin not configured":    link + "&origin=" + url.QueryEscape("https://evil.example"),
	} {
		if status, h, body := he.do(t, "GET", path, "", "", "", nil); status != 403 || !strings.Contains(body, "This page cannot be used") ||
			!strings.Contains(h.Get("Content-Type"), "text/html") {
			t.Errorf("%s: %d %s", name, status, body)
		}
	}
	if _, err := he.DB.Pool.Exec(context.Background(), `UPDATE hosted_pages SET expires_at = now() - interval '1 minute' WHERE object_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := he.do(t, "GET", link, "", "", "", nil); status != 403 {
		t.Errorf("an expired page token answered %d, want 403", status)
	}
}

func TestEachSurfaceHasItsHeaderPolicyAndCORSIsForAppOriginsOnly(t *testing.T) {
	he := startHosted(t, "127.0.0.1", "https://app.example.com")
	tok := userToken(t, "user-hosted-cors")

	// The drop-in: CORS for SRI from any origin, and what the docs publish.
	status, h, body := he.do(t, "GET", "/link.js", "", "", "", nil)
	if status != 200 || h.Get("Access-Control-Allow-Origin") != "*" || !strings.HasPrefix(h.Get("Content-Type"), "text/javascript") ||
		h.Get("Cross-Origin-Resource-Policy") != "cross-origin" || body != string(api.LinkJS) {
		t.Fatalf("/link.js: %d %v", status, h)
	}
	docs, err := os.ReadFile("../docs/HOSTED.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(docs), `integrity="`+api.LinkJSIntegrity+`"`) {
		t.Errorf("docs/HOSTED.md does not publish /link.js's integrity %s", api.LinkJSIntegrity)
	}

	// The JSON API keeps its headers: no framing at all.
	_, h, _ = he.do(t, "GET", "/v1/items", tok, "", "", nil)
	if h.Get("X-Frame-Options") != "DENY" || h.Get("Content-Security-Policy") != "default-src 'none'; frame-ancestors 'none'" {
		t.Errorf("the JSON API's headers changed: %v", h)
	}

	// CORS: an app origin gets answers, preflight included; another none.
	pre := func(origin string) (int, http.Header) {
		s, h, _ := he.do(t, "OPTIONS", "/v1/link/sessions", "", "", "", http.Header{"Origin": {origin},
			"Access-Control-Request-Method": {"POST"}, "Access-Control-Request-Headers": {"authorization, content-type"}})
		return s, h
	}
	if s, h := pre("https://app.example.com"); s != 204 || h.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("preflight from the app: %d %v", s, h)
	}
	if s, h := pre("https://evil.example"); s != 403 || h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin: %d %v", s, h)
	}
	_, h, _ = he.do(t, "GET", "/v1/items", tok, "", "", http.Header{"Origin": {"https://app.example.com"}})
	if h.Get("Access-Control-Allow-Origin") != "https://app.example.com" || !strings.Contains(h.Get("Vary"), "Origin") {
		t.Errorf("an app's call: %v", h)
	}
	_, h, _ = he.do(t, "GET", "/v1/items", tok, "", "", http.Header{"Origin": {"https://evil.example"}})
	if h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("another origin's call got CORS: %v", h)
	}

	// A redirect_uri must be an app's.
	status, _, resp := he.do(t, "POST", "/v1/link/sessions", tok, "application/json", `{"redirect_uri":"https://evil.example/back"}`, nil)
	mustError(t, status, resp, 400, "invalid_request")
}

func TestConcurrentPostsOfOneFormTakeItOnce(t *testing.T) {
	he := startHosted(t, "127.0.0.1", "https://app.example.com")
	tok := userToken(t, "user-hosted-race")
	_, link := he.linkSession(t, tok, `{}`)
	_, _, body := he.do(t, "GET", link, "", "", "", nil)
	form := url.Values{"form_token": {formToken(t, body)}, "action": {"search"}, "q": {"bank"}}
	page := link[:strings.Index(link, "?")]
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.PostForm(he.Direct+page, form)
			if err != nil {
				t.Error(err)
				return
			}
			_ = resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			if resp.StatusCode == 200 {
				ok++
			}
		}()
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d of 20 concurrent posts of one form were taken, want 1", ok)
	}
}
