package console_test

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func post(t *testing.T, c *http.Client, u, origin string, form url.Values) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func TestTheConsoleSignsInThroughOIDCAndKeepsTheTokenFromTheBrowser(t *testing.T) {
	ce := startConsole(t)
	c := ce.httpClient(t)

	resp, _ := get(t, c, ce.console.URL+"/")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Fatalf("an anonymous visit = %d %s, want a redirect to sign in", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = get(t, c, ce.console.URL+"/login")
	authz, _ := url.Parse(resp.Header.Get("Location"))
	q := authz.Query()
	if !strings.HasPrefix(authz.String(), ce.idp.URL+"/authorize") || q.Get("code_challenge_method") != "S256" ||
		q.Get("code_challenge") == "" || q.Get("nonce") == "" || q.Get("state") == "" {
		t.Fatalf("the sign-in request lacks PKCE, a nonce or a state: %s", authz)
	}
	login := cookie(resp, "__Host-kluis-console-login")
	if login == nil || !login.Secure || !login.HttpOnly || login.SameSite != http.SameSiteLaxMode {
		t.Errorf("login binding cookie = %+v", login)
	}

	ce.signIn(t, c, "staff_a")
	u, _ := url.Parse(ce.console.URL)
	var session *http.Cookie
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "__Host-kluis-console" {
			session = ck
		}
	}
	if session == nil {
		t.Fatal("no session cookie")
	}
	resp, body := get(t, c, ce.console.URL+"/")
	if resp.StatusCode != 200 || !strings.Contains(body, "Signed in as <strong>staff_a</strong>") {
		t.Fatalf("the queue = %d\n%s", resp.StatusCode, body)
	}
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy", "Strict-Transport-Security"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("no %s header", h)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); strings.Contains(csp, "script-src") || strings.Contains(csp, "unsafe") ||
		!strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP = %q", csp)
	}
	if strings.Contains(body, "<script") || strings.Contains(body, "style=") || strings.Contains(body, " on") && regexp.MustCompile(` on[a-z]+=`).MatchString(body) {
		t.Error("a page carries a script, an inline style or an event handler")
	}
	// The staff token never reaches the browser: not in a page, not in a
	// cookie (the session cookie is a random id).
	if strings.Count(session.Value, ".") >= 2 || strings.Contains(body, "eyJ") {
		t.Error("the browser holds a JWT")
	}
}

func TestTheSessionCookieIsHostOnlySecureHttpOnlyAndStrict(t *testing.T) {
	ce := startConsole(t)
	c := ce.httpClient(t)
	resp, _ := get(t, c, ce.console.URL+"/login")
	authz, _ := url.Parse(resp.Header.Get("Location"))
	q := authz.Query()
	form := url.Values{"user": {"staff_a"}}
	for _, k := range []string{"redirect_uri", "state", "nonce", "code_challenge"} {
		form.Set(k, q.Get(k))
	}
	resp, _ = post(t, c, ce.idp.URL+"/authorize", "", form)
	resp, _ = get(t, c, resp.Header.Get("Location"))
	ck := cookie(resp, "__Host-kluis-console")
	if ck == nil || !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.Domain != "" {
		t.Fatalf("session cookie = %+v", ck)
	}
}

func TestFormsNeedTheSessionsTokenAndTheConsolesOrigin(t *testing.T) {
	ce := startConsole(t)
	ce.subject(t, "user-csrf")
	c := ce.httpClient(t)
	ce.signIn(t, c, "staff_a")
	_, page := get(t, c, ce.console.URL+"/")
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF field on the page")
	}
	form := url.Values{"subject_id": {"user-csrf"}, "reason": {"T-1"}}
	for _, tc := range []struct {
		name, origin, csrf string
	}{
		{"no token", ce.console.URL, ""},
		{"another token", ce.console.URL, "forged"},
		{"another origin", "https://evil.example", m[1]},
		{"no origin", "", m[1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := url.Values{}
			for k, v := range form {
				f[k] = v
			}
			if tc.csrf != "" {
				f.Set("csrf", tc.csrf)
			}
			resp, _ := post(t, c, ce.console.URL+"/erasures", tc.origin, f)
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("= %d, want 403", resp.StatusCode)
			}
		})
	}
	var n int
	if err := ce.kluis.DB.Pool.QueryRow(t.Context(), `SELECT count(*) FROM erasure_requests`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("a refused form made %d requests (%v)", n, err)
	}
	form.Set("csrf", m[1])
	resp, _ := post(t, c, ce.console.URL+"/erasures", ce.console.URL, form)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the console's own form = %d, want 303", resp.StatusCode)
	}
	if got := ce.status(t, ce.requestID(t, "T-1")); got != "pending_approval" {
		t.Errorf("request = %s", got)
	}
	// Naming the subject's app passes it to kluis as ?app= (needed when
	// it serves several); an app it does not know is its 400, shown.
	ce.subject(t, "user-app")
	form = url.Values{"subject_id": {"user-app"}, "reason": {"T-2"}, "app": {"default"}, "csrf": {m[1]}}
	if resp, body := post(t, c, ce.console.URL+"/erasures", ce.console.URL, form); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a request naming the default app = %d\n%s", resp.StatusCode, body)
	}
	form.Set("app", "nosuchapp")
	form.Set("reason", "T-3")
	if resp, body := post(t, c, ce.console.URL+"/erasures", ce.console.URL, form); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `role="alert"`) {
		t.Fatalf("a request naming an unknown app = %d\n%s", resp.StatusCode, body)
	}
}

func TestASignInNotStartedInThisBrowserIsRefused(t *testing.T) {
	ce := startConsole(t)
	victim, attacker := ce.httpClient(t), ce.httpClient(t)
	// The attacker starts a sign-in and has the provider answer it, then
	// sends the callback URL to the victim (login CSRF).
	resp, _ := get(t, attacker, ce.console.URL+"/login")
	authz, _ := url.Parse(resp.Header.Get("Location"))
	q := authz.Query()
	form := url.Values{"user": {"staff_b"}}
	for _, k := range []string{"redirect_uri", "state", "nonce", "code_challenge"} {
		form.Set(k, q.Get(k))
	}
	resp, _ = post(t, attacker, ce.idp.URL+"/authorize", "", form)
	callback := resp.Header.Get("Location")
	if resp, _ := get(t, victim, callback); resp.StatusCode != http.StatusBadRequest || cookie(resp, "__Host-kluis-console") != nil {
		t.Fatalf("the victim's callback = %d, want 400 and no session", resp.StatusCode)
	}
	if resp, _ := get(t, victim, ce.console.URL+"/callback?state=made-up&code=x"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("an unknown state = %d, want 400", resp.StatusCode)
	}
}

func cookie(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}
