// Package oidctest is a small OpenID Connect provider for tests of the
// staff console: discovery, JWKS, an authorization endpoint that shows a
// page to pick a staff member (a form, so a real browser signs in with a
// click), and a token endpoint that checks the client, the redirect URI and
// the PKCE verifier (S256), and answers an ID token for the console and an
// access token for kluis's compliance API (jwttest's staff token: roles,
// amr and auth_time). Codes are single use and expire.
package oidctest

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
)

// ClientID is the console's registration at this provider.
const ClientID = "kluis-console"

// Provider is a running test provider.
type Provider struct {
	*httptest.Server
	t        testing.TB
	mu       sync.Mutex
	codes    map[string]grant
	users    []string
	authTime map[string]time.Time
	// Refused counts token requests refused (bad verifier, reused code, …).
	Refused int
}

type grant struct {
	redirect, challenge, nonce, user string
	issued                           time.Time
}

// Start runs a provider (TLS) whose sign-in page offers users.
func Start(t testing.TB, users ...string) *Provider {
	p := &Provider{t: t, codes: map[string]grant{}, users: users, authTime: map[string]time.Time{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("GET /jwks", p.jwks)
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /authorize", p.approve)
	mux.HandleFunc("POST /token", p.token)
	p.Server = httptest.NewTLSServer(mux)
	t.Cleanup(p.Close)
	return p
}

// SetAuthTime makes the next tokens of user say they authenticated at at
// (to test a stale MFA).
func (p *Provider) SetAuthTime(user string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.authTime[user] = at
}

func (p *Provider) discovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{
		"issuer": p.URL, "authorization_endpoint": p.URL + "/authorize", "token_endpoint": p.URL + "/token",
		"jwks_uri": p.URL + "/jwks", "response_types_supported": []string{"code"},
		"subject_types_supported": []string{"public"}, "id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
		"code_challenge_methods_supported": []string{"S256"},
	})
}

func (p *Provider) jwks(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(jwttest.JWKS(p.t, jwttest.DefaultKeys()...))
}

var page = template.Must(template.New("").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Staff sign-in</title></head>
<body><main><h1>Staff sign-in (test identity provider)</h1>
{{range .Users}}<form method="post" action="/authorize">
{{range $k, $v := $.Params}}<input type="hidden" name="{{$k}}" value="{{$v}}">{{end}}
<input type="hidden" name="user" value="{{.}}"><button type="submit" id="as-{{.}}">Sign in as {{.}}</button></form>{{end}}
</main></body></html>`))

// authorize shows the sign-in page for a well-formed request.
func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != ClientID || q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" ||
		q.Get("code_challenge") == "" || q.Get("state") == "" || q.Get("nonce") == "" {
		http.Error(w, "bad authorization request", http.StatusBadRequest)
		return
	}
	params := map[string]string{}
	for _, k := range []string{"redirect_uri", "state", "nonce", "code_challenge"} {
		params[k] = q.Get(k)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = page.Execute(w, map[string]any{"Users": p.users, "Params": params})
}

// approve signs the chosen user in and sends the browser back with a code.
func (p *Provider) approve(w http.ResponseWriter, r *http.Request) {
	code := randomCode()
	p.mu.Lock()
	p.codes[code] = grant{redirect: r.FormValue("redirect_uri"), challenge: r.FormValue("code_challenge"),
		nonce: r.FormValue("nonce"), user: r.FormValue("user"), issued: time.Now()}
	p.mu.Unlock()
	u, err := url.Parse(r.FormValue("redirect_uri"))
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	u.RawQuery = url.Values{"code": {code}, "state": {r.FormValue("state")}}.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// token exchanges a code, once, for the ID and access tokens.
func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	g, ok := p.codes[r.FormValue("code")]
	delete(p.codes, r.FormValue("code"))
	at, fresh := p.authTime[g.user]
	p.mu.Unlock()
	sum := sha256.Sum256([]byte(r.FormValue("code_verifier")))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	if !ok || time.Since(g.issued) > time.Minute || r.FormValue("grant_type") != "authorization_code" ||
		r.FormValue("redirect_uri") != g.redirect || subtle.ConstantTimeCompare([]byte(challenge), []byte(g.challenge)) != 1 ||
		clientOf(r) != ClientID {
		p.mu.Lock()
		p.Refused++
		p.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		writeJSON(w, map[string]string{"error": "invalid_grant"})
		return
	}
	if !fresh {
		at = time.Now()
	}
	access := jwttest.StaffToken(p.t, jwttest.WithSubject(g.user), jwttest.WithClaim("auth_time", at.Unix()))
	id := jwttest.Mint(p.t, jwttest.WithIssuer(p.URL), jwttest.WithAudience(ClientID), jwttest.WithSubject(g.user),
		jwttest.WithClaim("nonce", g.nonce))
	writeJSON(w, map[string]any{"access_token": access, "id_token": id, "token_type": "Bearer", "expires_in": 3600})
}

// clientOf is the client id from HTTP Basic or the form (public client).
func clientOf(r *http.Request) string {
	if id, _, ok := r.BasicAuth(); ok {
		return id
	}
	return r.FormValue("client_id")
}

func randomCode() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
