package jwtauth_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api/jwtauth"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
)

// urlVerifier is a verifier on s's JWKS URL that, unless edit says otherwise,
// neither refreshes in the background nor more than once an hour for an
// unknown kid, so that the fetch count only moves when a test makes it.
func urlVerifier(t *testing.T, s *jwttest.Server, edit ...func(*jwtauth.Options)) *jwtauth.Verifier {
	t.Helper()
	o := baseOptions()
	o.JWKSURL = s.URL()
	o.RefreshInterval = time.Hour
	o.UnknownKIDRefreshInterval = time.Hour
	o.Logger = slog.New(slog.DiscardHandler)
	for _, e := range edit {
		e(&o)
	}
	return newVerifier(t, o)
}

// eventually polls cond until it holds, failing the test after a generous
// bound: it waits for a background refresh, it does not time one.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wantFetches(t *testing.T, s *jwttest.Server, want int) {
	t.Helper()
	if got := s.Fetches(); got != want {
		t.Fatalf("JWKS fetched %d times, want %d", got, want)
	}
}

func TestURLVerifiesWithTheFetchedKeys(t *testing.T) {
	t.Parallel()
	s := jwttest.NewServer(t)
	v := urlVerifier(t, s)
	wantFetches(t, s, 1)
	for _, tok := range []string{jwttest.Token(t), jwttest.Token(t, jwttest.WithKey(jwttest.ECKey()))} {
		if _, err := v.VerifyUser(t.Context(), tok); err != nil {
			t.Fatalf("VerifyUser: %v", err)
		}
	}
	if _, err := v.VerifyStaff(t.Context(), jwttest.StaffToken(t)); err != nil {
		t.Fatalf("VerifyStaff: %v", err)
	}
	wantFetches(t, s, 1)
}

func TestURLRefusesMaliciousTokens(t *testing.T) {
	t.Parallel()
	s := jwttest.NewServer(t)
	v := urlVerifier(t, s)
	for _, c := range jwttest.Malicious(t) {
		_, err := v.VerifyUser(t.Context(), c.Token)
		if !errors.Is(err, jwtauth.ErrInvalidToken) {
			t.Errorf("%s: err = %v, want ErrInvalidToken", c.Name, err)
		}
	}
}

func TestURLUnknownKIDRefreshesOnceThenVerifiesTheNewKey(t *testing.T) {
	t.Parallel()
	s := jwttest.NewServer(t)
	v := urlVerifier(t, s)
	wantFetches(t, s, 1)

	rotated := s.Rotate(t, "rotated-1")
	tok := jwttest.Token(t, jwttest.WithKey(rotated))
	if _, err := v.VerifyUser(t.Context(), tok); err != nil {
		t.Fatalf("VerifyUser(new key): %v", err)
	}
	wantFetches(t, s, 2)

	if _, err := v.VerifyUser(t.Context(), jwttest.Token(t, jwttest.WithKey(rotated), jwttest.WithSubject("user_2"))); err != nil {
		t.Fatalf("VerifyUser(new key, again): %v", err)
	}
	wantFetches(t, s, 2)
}

func TestURLUnknownKIDRefreshesAreRateLimited(t *testing.T) {
	t.Parallel()
	s := jwttest.NewServer(t)
	v := urlVerifier(t, s)

	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			tok := jwttest.Token(t, jwttest.WithKID(fmt.Sprintf("made-up-%d", i)))
			if _, err := v.VerifyUser(t.Context(), tok); !errors.Is(err, jwtauth.ErrInvalidToken) {
				t.Errorf("VerifyUser(unknown kid) = %v", err)
			}
		})
	}
	wg.Wait()
	wantFetches(t, s, 2)

	// The floor holds for a real new key too: it waits for the next allowed
	// or background fetch.
	rotated := s.Rotate(t, "rotated-1")
	if _, err := v.VerifyUser(t.Context(), jwttest.Token(t, jwttest.WithKey(rotated))); !errors.Is(err, jwtauth.ErrInvalidToken) {
		t.Fatalf("VerifyUser(new key within the floor) = %v, want ErrInvalidToken", err)
	}
	wantFetches(t, s, 2)
}

func TestURLRefreshesInTheBackground(t *testing.T) {
	t.Parallel()
	s := jwttest.NewServer(t)
	v := urlVerifier(t, s, func(o *jwtauth.Options) { o.RefreshInterval = 10 * time.Millisecond })
	// Spend the unknown-kid allowance so that only the background refresh
	// can bring the new key in.
	_, _ = v.VerifyUser(t.Context(), jwttest.Token(t, jwttest.WithKID("made-up")))

	rotated := jwttest.NewECKey(t, "rotated-1")
	s.SetKeys(rotated)
	fresh := jwttest.Token(t, jwttest.WithKey(rotated))
	old := jwttest.Token(t)
	eventually(t, "the new key verifies", func() bool {
		_, err := v.VerifyUser(t.Context(), fresh)
		return err == nil
	})
	if _, err := v.VerifyUser(t.Context(), old); !errors.Is(err, jwtauth.ErrInvalidToken) {
		t.Fatalf("VerifyUser(retired key) = %v, want ErrInvalidToken", err)
	}
}

func TestURLKeepsItsKeysWhenARefreshFails(t *testing.T) {
	t.Parallel()
	s := jwttest.NewServer(t)
	v := urlVerifier(t, s, func(o *jwtauth.Options) { o.RefreshInterval = 10 * time.Millisecond })
	s.FailWith(http.StatusServiceUnavailable)
	n := s.Fetches()
	eventually(t, "two failed refreshes", func() bool { return s.Fetches() >= n+2 })
	if _, err := v.VerifyUser(t.Context(), jwttest.Token(t)); err != nil {
		t.Fatalf("VerifyUser after failed refreshes: %v", err)
	}
}

func TestURLDropsKeysItWouldNotTrust(t *testing.T) {
	t.Parallel()
	small := smallRSAKey(t)
	s := jwttest.NewServer(t)
	s.SetRaw(jwttest.RawJWKS(t, octJWK(), jwttest.PublicJWK(t, small), p384JWK(t), ed25519JWK(t), jwttest.PublicJWK(t, jwttest.RSAKey())))
	v := urlVerifier(t, s)

	if _, err := v.VerifyUser(t.Context(), jwttest.Token(t)); err != nil {
		t.Fatalf("VerifyUser(RSA-2048 token): %v", err)
	}
	for name, tok := range map[string]string{
		"HS256 with the published secret": jwttest.Token(t, jwttest.WithHMACSecret([]byte(hmacSecret)), jwttest.WithKID(hmacKID)),
		"RS256 with the RSA-1024 key":     jwttest.Token(t, jwttest.WithKey(small)),
	} {
		if _, err := v.VerifyUser(t.Context(), tok); !errors.Is(err, jwtauth.ErrInvalidToken) {
			t.Errorf("%s: err = %v, want ErrInvalidToken", name, err)
		}
	}
}

func TestURLOverHTTPSWithACustomClient(t *testing.T) {
	t.Parallel()
	jwks := jwttest.JWKS(t)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(jwks) }))
	t.Cleanup(srv.Close)
	o := baseOptions()
	o.JWKSURL = srv.URL + "/jwks"
	o.HTTPClient = srv.Client()
	v := newVerifier(t, o)
	if _, err := v.VerifyUser(t.Context(), jwttest.Token(t)); err != nil {
		t.Fatalf("VerifyUser: %v", err)
	}
}

func TestNewRefusesBadJWKSURLs(t *testing.T) {
	t.Parallel()
	down := jwttest.NewServer(t)
	down.FailWith(http.StatusServiceUnavailable)
	onlyOct := jwttest.NewServer(t)
	onlyOct.SetRaw(jwttest.RawJWKS(t, octJWK()))
	good := jwttest.NewServer(t)
	redirect := httptest.NewServer(http.RedirectHandler(good.URL(), http.StatusFound))
	t.Cleanup(redirect.Close)
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"keys":[` + strings.Repeat(" ", 2<<20) + `]}`))
	}))
	t.Cleanup(huge.Close)

	tests := []struct {
		name string
		url  string
	}{
		{"plain http to another host", "http://idp.example/jwks"},
		{"plain http to localhost by name", strings.Replace(good.URL(), "127.0.0.1", "localhost", 1)},
		{"another scheme", "ftp://127.0.0.1/jwks"},
		{"credentials in the URL", "https://user:pass@idp.example/jwks"},
		{"no host", "https:///jwks"},
		{"a server that is down", down.URL()},
		{"a set with no usable key", onlyOct.URL()},
		{"a redirect", redirect.URL},
		{"an endless body", huge.URL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := baseOptions()
			o.JWKSURL = tt.url
			o.HTTPTimeout = 5 * time.Second
			_, err := jwtauth.New(t.Context(), o)
			if err == nil {
				t.Fatal("New succeeded")
			}
			t.Log(err)
		})
	}
	wantFetches(t, good, 0)
}
