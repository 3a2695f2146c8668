package jwttest

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// Server serves a JWKS over plain HTTP on 127.0.0.1 and counts the fetches,
// so tests can see refreshes happen (and not happen). Its keys can be added
// and replaced while it runs.
type Server struct {
	srv     *httptest.Server
	fetches atomic.Int64

	mu     sync.Mutex
	keys   []Key
	raw    []byte
	status int
}

// NewServer starts a JWKS server with keys (DefaultKeys if none); it stops
// when the test ends.
func NewServer(t testing.TB, keys ...Key) *Server {
	t.Helper()
	if len(keys) == 0 {
		keys = DefaultKeys()
	}
	s := &Server{keys: slices.Clone(keys), status: http.StatusOK}
	// The JWKS is built per request so that key changes show at once.
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		keys, raw, status := slices.Clone(s.keys), s.raw, s.status
		s.mu.Unlock()
		if status != http.StatusOK {
			http.Error(w, "unavailable", status)
			return
		}
		if raw == nil {
			var err error
			if raw, err = jwksJSON(keys); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(raw)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// URL is the JWKS address.
func (s *Server) URL() string { return s.srv.URL + "/.well-known/jwks.json" }

// Client is an HTTP client for the server.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Fetches is how many times the JWKS has been requested.
func (s *Server) Fetches() int { return int(s.fetches.Load()) }

// AddKey publishes one more key.
func (s *Server) AddKey(k Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, k)
}

// SetKeys replaces the published keys: a rotation that retires the old ones.
func (s *Server) SetKeys(keys ...Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = slices.Clone(keys)
}

// Rotate publishes a fresh P-256 key under kid and returns it.
func (s *Server) Rotate(t testing.TB, kid string) Key {
	t.Helper()
	k := NewECKey(t, kid)
	s.AddKey(k)
	return k
}

// SetRaw serves raw as the JWKS document instead of the keys (see RawJWKS),
// or the keys again when raw is nil.
func (s *Server) SetRaw(raw []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw = raw
}

// FailWith makes the server answer status (say 503) instead of the JWKS, or
// serve again with http.StatusOK.
func (s *Server) FailWith(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = status
}
