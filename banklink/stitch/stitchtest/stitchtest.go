// Package stitchtest is an in-test Stitch: the identity server's OAuth 2.0
// endpoints (authorize with PKCE S256, token with the authorization-code,
// refresh-token and client-credentials grants, revocation) and the GraphQL
// API's operations kluis uses (the user's bank accounts, bank account
// verification), with Stitch's rules as its documentation states them:
// user tokens that expire (15 minutes), refresh tokens that are single use
// and replaced on every use, codes that are single use and bound to their
// redirect URI and PKCE challenge, client_secret_post client
// authentication. Faults a test can switch on: Stitch down, an answer lost
// after the refresh was done, reauthorization required, and a clock the
// test moves; refresh tokens also die unused after RefreshTokenIdleTTL,
// and a user may authorize again (Reauthorize). It counts every attempt to spend a refresh token twice, so a
// test can prove that kluis never did.
package stitchtest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
)

// Test credentials the server accepts.
const (
	ClientID      = "test-client-0f6c"
	ClientSecret  = "test-secret-7d1e-not-a-real-secret"         // #nosec G101 -- a test server's fixed secret
	WebhookSecret = "whsec_c3RpdGNodGVzdC13ZWJob29rLXNlY3JldA==" // #nosec G101 -- a test server's fixed webhook secret
)

// Banks a user can link at (Stitch BankId values).
const (
	// BankAuth's accounts come with full numbers (instant auth).
	BankAuth = "absa"
	// BankNoAuth's only account is a card with a masked number.
	BankNoAuth = "tymebank"
)

// UserTokenTTL and the other lifetimes, as Stitch documents them.
const (
	UserTokenTTL   = 15 * time.Minute
	ClientTokenTTL = time.Hour
	CodeTTL        = 5 * time.Minute
	// RefreshTokenIdleTTL: a refresh token unused this long is refused
	// (Stitch's sliding expiry: each refresh issues a new one).
	RefreshTokenIdleTTL = 365 * 24 * time.Hour
	// UnusedReauthAfter: "if a user token is successfully refreshed but
	// unused for a year the next request made will receive a
	// reauthorization error".
	UnusedReauthAfter = 365 * 24 * time.Hour
)

// Server is the in-test Stitch. Its URL is both STITCH_BASE_URL and
// STITCH_AUTH_URL.
type Server struct {
	*httptest.Server
	clock kluis.Clock

	mu      sync.Mutex
	redirs  map[string]bool // registered redirect URIs; empty: any
	codes   map[string]*grant
	access  map[string]*userToken
	refresh map[string]*refreshToken
	clients map[string]time.Time // client token → expiry
	users   map[string]*User
	bank    string // the bank the next user links at
	// consentPage: the authorize endpoint shows a consent page.
	consentPage bool
	// signInAs: the consent page's next Allow is this existing user's.
	signInAs string
	// faults
	down        bool
	loseRefresh int
	reused      int
	refreshes   int
	bav         bavState
}

type grant struct {
	redirect, challenge, user string
	expires                   time.Time
	used                      bool
}

type userToken struct {
	user    string
	expires time.Time
	dead    bool
}

type refreshToken struct {
	user   string
	used   bool
	issued time.Time
	// access is the user token issued with it, killed when it is spent.
	access string
}

// User is a Stitch user who linked a bank.
type User struct {
	ID       string
	Bank     string
	Accounts []Account
	// Revoked: the grant was revoked; ReauthRequired: the bank asks the
	// user to authorize again.
	Revoked, ReauthRequired bool
	// LastUsed is when a user token of theirs was last used at the API
	// (or they last authorized): Stitch asks for reauthorization when a
	// token is used after UnusedReauthAfter without use, however often it
	// was refreshed meanwhile.
	LastUsed time.Time
}

// LastUsed returns when the user's tokens were last used at the API.
func (s *Server) LastUsed(userID string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.users[userID]; u != nil {
		return u.LastUsed
	}
	return time.Time{}
}

// Account is one of a user's bank accounts.
type Account struct {
	ID, Name, Number, Type, BranchCode string
}

// Option configures the server.
type Option func(*Server)

// WithClock sets the clock that decides expiry.
func WithClock(c kluis.Clock) Option { return func(s *Server) { s.clock = c } }

// NewServer starts the server, closed when t ends.
func NewServer(t testing.TB, opts ...Option) *Server {
	s := &Server{clock: kluis.SystemClock{}, redirs: map[string]bool{}, codes: map[string]*grant{},
		access: map[string]*userToken{}, refresh: map[string]*refreshToken{}, clients: map[string]time.Time{},
		users: map[string]*User{}, bank: BankAuth}
	s.bav.init()
	for _, o := range opts {
		o(s)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /connect/authorize", s.authorize)
	mux.HandleFunc("POST /connect/authorize/consent", s.decide)
	mux.HandleFunc("POST /connect/token", s.token)
	mux.HandleFunc("POST /connect/revocation", s.revoke)
	mux.HandleFunc("POST /graphql", s.graphql)
	s.Server = httptest.NewServer(s.gate(mux))
	t.Cleanup(s.Close)
	return s
}

// gate answers 503 to everything while the server is down.
func (s *Server) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		down := s.down
		s.mu.Unlock()
		if down {
			http.Error(w, `{"error":"temporarily_unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// SetDown makes every endpoint answer 503 (or work again).
func (s *Server) SetDown(down bool) { s.mu.Lock(); s.down = down; s.mu.Unlock() }

// RegisterRedirect limits the redirect URIs the client may use (by default any).
func (s *Server) RegisterRedirect(uri string) { s.mu.Lock(); s.redirs[uri] = true; s.mu.Unlock() }

// LinkAt makes the next user who authorizes link at bank.
func (s *Server) LinkAt(bank string) { s.mu.Lock(); s.bank = bank; s.mu.Unlock() }

// LoseRefreshAnswers makes the next n refreshes succeed at Stitch (the
// old refresh token is spent, a new pair issued) and then lose their
// answer: the connection is closed before a byte of it is sent.
func (s *Server) LoseRefreshAnswers(n int) { s.mu.Lock(); s.loseRefresh = n; s.mu.Unlock() }

// RefreshReuses counts attempts to spend a refresh token already spent.
func (s *Server) RefreshReuses() int { s.mu.Lock(); defer s.mu.Unlock(); return s.reused }

// Refreshes counts refreshes that issued a new pair.
func (s *Server) Refreshes() int { s.mu.Lock(); defer s.mu.Unlock(); return s.refreshes }

// SetReauthRequired makes the user's bank ask them to authorize again.
func (s *Server) SetReauthRequired(userID string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.users[userID]; u != nil {
		u.ReauthRequired = on
	}
}

// UserOf returns the user a live user token belongs to.
func (s *Server) UserOf(accessToken string) (User, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.access[accessToken]
	if t == nil || t.dead || !s.clock.Now().Before(t.expires) {
		return User{}, false
	}
	return *s.users[t.user], true
}

// Authorize plays the user at the authorize URL: it checks the request as
// the endpoint does, lets the user log in at the bank LinkAt named and
// consent, and returns the URL Stitch redirects the browser to (kluis's
// callback with the code and state).
func (s *Server) Authorize(authorizeURL string) (string, error) {
	u, err := url.Parse(authorizeURL)
	if err != nil {
		return "", err
	}
	loc, status := s.consent(u.Query(), "")
	if status != http.StatusFound {
		return "", fmt.Errorf("stitchtest: authorize refused: %s", loc)
	}
	return loc, nil
}

// Reauthorize plays an existing user going through the authorize URL
// again (Stitch's reauthorization): they log in at their bank, which no
// longer asks for it, and consent; the code issued is for the same user
// (the id token's sub is unchanged).
func (s *Server) Reauthorize(authorizeURL, userID string) (string, error) {
	u, err := url.Parse(authorizeURL)
	if err != nil {
		return "", err
	}
	loc, status := s.consent(u.Query(), userID)
	if status != http.StatusFound {
		return "", fmt.Errorf("stitchtest: authorize refused: %s", loc)
	}
	return loc, nil
}

// Decline plays the user refusing consent: the redirect carries
// error=access_denied.
func (s *Server) Decline(authorizeURL string) (string, error) {
	u, err := url.Parse(authorizeURL)
	if err != nil {
		return "", err
	}
	q := u.Query()
	back, err := url.Parse(q.Get("redirect_uri"))
	if err != nil {
		return "", err
	}
	v := url.Values{"error": {"access_denied"}, "state": {q.Get("state")}}
	back.RawQuery = v.Encode()
	return back.String(), nil
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	if s.consentPage {
		s.consentForm(w, r)
		return
	}
	loc, status := s.consent(r.URL.Query(), "")
	if status != http.StatusFound {
		http.Error(w, loc, status)
		return
	}
	http.Redirect(w, r, loc, http.StatusFound)
}

// consent validates an authorize request and issues a code for a new
// user, or for the existing user userID (reauthorization).
func (s *Server) consent(q url.Values, userID string) (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case q.Get("client_id") != ClientID:
		return "unknown client", http.StatusBadRequest
	case q.Get("response_type") != "code":
		return "response_type must be code", http.StatusBadRequest
	case q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43:
		return "PKCE with S256 is required", http.StatusBadRequest
	case q.Get("state") == "" || q.Get("nonce") == "":
		return "state and nonce are required", http.StatusBadRequest
	case !hasScopes(q.Get("scope"), "openid", "offline_access", "accounts"):
		return "scope must include openid, offline_access and accounts", http.StatusBadRequest
	}
	redirect := q.Get("redirect_uri")
	back, err := url.Parse(redirect)
	if err != nil || back.Host == "" || (len(s.redirs) > 0 && !s.redirs[redirect]) {
		return "redirect_uri is not registered", http.StatusBadRequest
	}
	user := s.users[userID]
	switch {
	case userID == "":
		user = s.newUser(s.bank)
	case user == nil:
		return "unknown user", http.StatusBadRequest
	default:
		user.ReauthRequired = false
	}
	code := random(32)
	s.codes[code] = &grant{redirect: redirect, challenge: q.Get("code_challenge"), user: user.ID,
		expires: s.clock.Now().Add(CodeTTL)}
	v := url.Values{"code": {code}, "state": {q.Get("state")}, "scope": {q.Get("scope")}}
	back.RawQuery = v.Encode()
	return back.String(), http.StatusFound
}

func (s *Server) newUser(bank string) *User {
	u := &User{ID: "user-" + random(12), Bank: bank}
	switch bank {
	case BankNoAuth:
		u.Accounts = []Account{{ID: "acc-" + random(10), Name: "Credit Card", Number: "************" + digits(4), Type: "creditCard"}}
	default:
		u.Accounts = []Account{
			{ID: "acc-" + random(10), Name: "Cheque Account", Number: "40" + digits(8), Type: "current", BranchCode: "632005"},
			{ID: "acc-" + random(10), Name: "Savings", Number: "91" + digits(8), Type: "savings", BranchCode: "632005"},
		}
	}
	s.users[u.ID] = u
	return u
}

func hasScopes(scope string, want ...string) bool {
	have := map[string]bool{}
	for _, sc := range strings.Fields(scope) {
		have[sc] = true
	}
	for _, w := range want {
		if !have[w] {
			return false
		}
	}
	return true
}

// token is the token endpoint (form-encoded, client_secret_post).
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		oauthErr(w, http.StatusBadRequest, "invalid_request")
		return
	}
	f := r.PostForm
	if !clientAuthenticated(w, f) {
		return
	}
	switch f.Get("grant_type") {
	case "authorization_code":
		s.redeem(w, f)
	case "refresh_token":
		s.spend(w, f)
	case "client_credentials":
		s.clientCredentials(w, f)
	default:
		oauthErr(w, http.StatusBadRequest, "unsupported_grant_type")
	}
}

// clientAuthenticated checks the client's id and secret (client_secret_post)
// and answers invalid_client when they are wrong.
func clientAuthenticated(w http.ResponseWriter, f url.Values) bool {
	if f.Get("client_id") != ClientID || !hmac.Equal([]byte(f.Get("client_secret")), []byte(ClientSecret)) {
		oauthErr(w, http.StatusUnauthorized, "invalid_client")
		return false
	}
	return true
}

// redeem trades a code for a user token and a refresh token.
func (s *Server) redeem(w http.ResponseWriter, f url.Values) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.codes[f.Get("code")]
	sum := sha256.Sum256([]byte(f.Get("code_verifier")))
	switch {
	case g == nil || g.used || !s.clock.Now().Before(g.expires):
		oauthErr(w, http.StatusBadRequest, "invalid_grant")
		return
	case g.redirect != f.Get("redirect_uri"):
		oauthErr(w, http.StatusBadRequest, "invalid_grant")
		return
	case base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge:
		oauthErr(w, http.StatusBadRequest, "invalid_grant")
		return
	}
	g.used = true
	s.users[g.user].LastUsed = s.clock.Now()
	writeJSON(w, s.issue(g.user, true))
}

// spend spends a refresh token: single use, replaced on every use, the
// user token issued with it killed.
func (s *Server) spend(w http.ResponseWriter, f url.Values) {
	s.mu.Lock()
	rt := s.refresh[f.Get("refresh_token")]
	switch {
	case rt == nil:
		s.mu.Unlock()
		oauthErr(w, http.StatusBadRequest, "invalid_grant")
		return
	case rt.used:
		s.reused++
		s.mu.Unlock()
		oauthErr(w, http.StatusBadRequest, "invalid_grant")
		return
	case s.users[rt.user].Revoked, !s.clock.Now().Before(rt.issued.Add(RefreshTokenIdleTTL)):
		s.mu.Unlock()
		oauthErr(w, http.StatusBadRequest, "invalid_grant")
		return
	}
	rt.used = true
	if t := s.access[rt.access]; t != nil {
		t.dead = true
	}
	ans := s.issue(rt.user, false)
	s.refreshes++
	lose := s.loseRefresh > 0
	if lose {
		s.loseRefresh--
	}
	s.mu.Unlock()
	if lose {
		hangUp(w)
		return
	}
	writeJSON(w, ans)
}

// issue makes a user token and its refresh token (and, at first, an id
// token naming the user). The caller holds mu.
func (s *Server) issue(user string, idToken bool) map[string]any {
	access, refresh := "stitch-ut-"+random(24), "stitch-rt-"+random(24)
	s.access[access] = &userToken{user: user, expires: s.clock.Now().Add(UserTokenTTL)}
	s.refresh[refresh] = &refreshToken{user: user, access: access, issued: s.clock.Now()}
	ans := map[string]any{"access_token": access, "expires_in": int(UserTokenTTL / time.Second),
		"refresh_token": refresh, "token_type": "Bearer", "scope": "openid offline_access accounts accountholders"}
	if idToken {
		ans["id_token"] = s.idToken(user)
	}
	return ans
}

// idToken is an id token for user, signed HS256 with the client secret as
// OpenID Connect allows for confidential clients.
func (s *Server) idToken(user string) string {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	now := s.clock.Now().Unix()
	claims, _ := json.Marshal(map[string]any{"iss": s.URL, "sub": user, "aud": ClientID, "iat": now, "exp": now + 3600})
	body := head + "." + enc.EncodeToString(claims)
	m := hmac.New(sha256.New, []byte(ClientSecret))
	m.Write([]byte(body))
	return body + "." + enc.EncodeToString(m.Sum(nil))
}

func (s *Server) clientCredentials(w http.ResponseWriter, f url.Values) {
	if !hasScopes(f.Get("scope"), "client_bankaccountverification") {
		oauthErr(w, http.StatusBadRequest, "invalid_scope")
		return
	}
	s.mu.Lock()
	tok := "stitch-ct-" + random(24)
	s.clients[tok] = s.clock.Now().Add(ClientTokenTTL)
	s.mu.Unlock()
	writeJSON(w, map[string]any{"access_token": tok, "expires_in": int(ClientTokenTTL / time.Second),
		"token_type": "Bearer", "scope": f.Get("scope")})
}

// revoke revokes a refresh token and with it the user's grant. A token it
// does not know, or one already spent or revoked, is invalid_grant (kluis
// relies on this to tell "revoked now" from "was dead already"; see
// docs/STITCH.md).
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthErr(w, http.StatusBadRequest, "invalid_request")
		return
	}
	f := r.PostForm
	if !clientAuthenticated(w, f) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := s.refresh[f.Get("token")]
	if rt == nil || rt.used || s.users[rt.user].Revoked {
		oauthErr(w, http.StatusBadRequest, "invalid_grant")
		return
	}
	s.users[rt.user].Revoked = true
	for _, t := range s.access {
		if t.user == rt.user {
			t.dead = true
		}
	}
	w.WriteHeader(http.StatusOK)
}

// hangUp closes the connection without an answer: the request was done,
// the answer is lost.
func hangUp(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

func oauthErr(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": "refused by stitchtest"})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

func digits(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = '0' + b[i]%10
	}
	return string(b)
}

// Webhook is a signed webhook as Stitch (through Svix) sends it.
type Webhook struct {
	Header http.Header
	Body   []byte
}

// SignWebhook signs body as Stitch would send it now.
func (s *Server) SignWebhook(body []byte) Webhook {
	id := "msg_" + random(20)
	ts := strconv.FormatInt(s.clock.Now().Unix(), 10)
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(WebhookSecret, "whsec_"))
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	h := http.Header{"Content-Type": {"application/json"}, "Svix-Id": {id}, "Svix-Timestamp": {ts},
		"Svix-Signature": {"v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))}}
	return Webhook{Header: h, Body: body}
}

// ReauthorizationWebhook says the user must authorize again.
func (s *Server) ReauthorizationWebhook(userID string) Webhook {
	body, _ := json.Marshal(map[string]any{"type": "user.reauthorization_required", "data": map[string]string{"userId": userID}})
	return s.SignWebhook(body)
}
