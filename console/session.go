package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// Cookie names. The __Host- prefix makes the browser insist on Secure, the
// path "/" and no Domain, so no other host can set or read them.
const (
	sessionCookie = "__Host-kluis-console"
	// loginCookie binds a sign-in in progress to the browser that started
	// it (no login CSRF). It is SameSite=Lax because the identity provider
	// sends the browser back with a cross-site navigation.
	loginCookie = "__Host-kluis-console-login"
	// maxPendingLogin bounds how long a sign-in may take at the provider.
	maxPendingLogin = 10 * time.Minute
	// maxSessions bounds memory: past it, the oldest sessions are dropped.
	maxSessions = 10_000
)

// session is a signed-in staff member. The token stays on the server.
type session struct {
	staff   string
	token   string
	csrf    string
	expires time.Time
}

// pendingLogin is a sign-in sent to the identity provider, by its state.
type pendingLogin struct {
	verifier string // PKCE code verifier
	nonce    string
	binding  [32]byte // SHA-256 of the login cookie's value
	next     string
	started  time.Time
}

// sessions keeps sessions and pending sign-ins in memory: a restart signs
// everyone out, which for a staff console is a feature.
type sessions struct {
	maxAge time.Duration
	mu     sync.Mutex
	byID   map[[32]byte]*session
	logins map[string]pendingLogin
}

func newSessions(maxAge time.Duration) *sessions {
	return &sessions{maxAge: maxAge, byID: map[[32]byte]*session{}, logins: map[string]pendingLogin{}}
}

// random returns n random bytes, base64url.
func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session and answers its cookie value. Sessions are kept
// by the SHA-256 of the cookie, so a dump of the map gives no cookie.
func (s *sessions) create(staff, token string, tokenExpiry time.Time) (string, *session) {
	id := random(32)
	exp := time.Now().Add(s.maxAge)
	if !tokenExpiry.IsZero() && tokenExpiry.Before(exp) {
		exp = tokenExpiry
	}
	ss := &session{staff: staff, token: token, csrf: random(32), expires: exp}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep()
	s.byID[sha256.Sum256([]byte(id))] = ss
	return id, ss
}

// get finds the live session of a cookie value.
func (s *sessions) get(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := sha256.Sum256([]byte(id))
	ss := s.byID[k]
	if ss == nil {
		return nil
	}
	if time.Now().After(ss.expires) {
		delete(s.byID, k)
		return nil
	}
	return ss
}

func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, sha256.Sum256([]byte(id)))
}

// sweep drops expired sessions and sign-ins, and the oldest when too many.
// Called with mu held.
func (s *sessions) sweep() {
	now := time.Now()
	for k, ss := range s.byID {
		if now.After(ss.expires) || len(s.byID) > maxSessions {
			delete(s.byID, k)
		}
	}
	for k, p := range s.logins {
		if now.Sub(p.started) > maxPendingLogin || len(s.logins) > maxSessions {
			delete(s.logins, k)
		}
	}
}

func (s *sessions) startLogin(state string, p pendingLogin) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep()
	s.logins[state] = p
}

// finishLogin takes the pending sign-in of state, once.
func (s *sessions) finishLogin(state string) (pendingLogin, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.logins[state]
	delete(s.logins, state)
	if !ok || time.Since(p.started) > maxPendingLogin {
		return pendingLogin{}, false
	}
	return p, true
}

func setCookie(c echo.Context, name, value string, sameSite http.SameSite, maxAge int) {
	c.SetCookie(&http.Cookie{
		Name: name, Value: value, Path: "/", Secure: true, HttpOnly: true, SameSite: sameSite, MaxAge: maxAge,
	})
}

// requireSession sends a visitor without a live session to sign in.
func (s *Server) requireSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		ck, err := c.Cookie(sessionCookie)
		var ss *session
		if err == nil {
			ss = s.sessions.get(ck.Value)
		}
		if ss == nil {
			if c.Request().Method != http.MethodGet {
				return echo.NewHTTPError(http.StatusForbidden, "Your session has ended. Sign in again.")
			}
			return c.Redirect(http.StatusSeeOther, "/login?next="+safeNext(c.Request().URL.Path))
		}
		c.Set("session", ss)
		return next(c)
	}
}

func sessionOf(c echo.Context) *session { return c.Get("session").(*session) }

// checkForm refuses a form post that does not come from the console's own
// origin or lacks the session's CSRF token.
func (s *Server) checkForm(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		origin := r.Header.Get("Origin")
		if origin == "" || origin == "null" {
			// Browsers send Origin on every POST; its absence is a tool
			// or an old client, not a form of ours.
			return echo.NewHTTPError(http.StatusForbidden, "This form did not come from the console.")
		}
		if origin != s.origin {
			return echo.NewHTTPError(http.StatusForbidden, "This form did not come from the console.")
		}
		got := c.FormValue("csrf")
		if subtle.ConstantTimeCompare([]byte(got), []byte(sessionOf(c).csrf)) != 1 {
			return echo.NewHTTPError(http.StatusForbidden, "This form has expired. Reload the page and try again.")
		}
		return next(c)
	}
}

// safeNext keeps a post-login destination on the console: a path of its
// own, never another host.
func safeNext(p string) string {
	switch p {
	case "/", "/holds", "/subjects", "/audit":
		return p
	}
	return "/"
}
