package jwtauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"golang.org/x/time/rate"
)

// errRedirect refuses a redirect from the JWKS URL: the keys come from the
// address the operator configured or not at all.
var errRedirect = errors.New("JWKS URL answered with a redirect, which kluis does not follow")

// remoteKeys holds the keys of a JWKS URL. jwkset fetches the set at start and
// then every refresh interval in the background. A kid it does not know
// (a key rotated in since the last fetch) fetches once more, at most once per
// unknown-kid interval.
//
// jwkset's own unknown-kid refresh waits on its rate limiter, so a burst of
// tokens with made-up kids would hold requests open until the limiter allows
// the next fetch. Here the limiter is asked without waiting: a request either
// starts the fetch, joins one already running, or fails at once.
type remoteKeys struct {
	// Storage reads the fetched keys and never fetches.
	jwkset.Storage
	// refresher reads the same keys but fetches once before answering
	// "not found"; only startRefresh calls it.
	refresher jwkset.Storage
	limiter   *rate.Limiter
	life      context.Context
	timeout   time.Duration

	mu       sync.Mutex
	inflight chan struct{}
}

// newRemoteKeys fetches the JWKS at rawURL once, failing if that fetch fails
// or yields no usable key, and keeps it fresh until ctx ends.
func newRemoteKeys(ctx context.Context, rawURL string, o Options, log *slog.Logger) (*remoteKeys, error) {
	if err := checkJWKSURL(rawURL); err != nil {
		return nil, err
	}
	store := newSigningKeyStore(func(kid string, err error) {
		log.Warn("JWKS key refused", "kid", kid, "reason", err.Error())
	})
	httpStore, err := jwkset.NewStorageFromHTTP(rawURL, jwkset.HTTPClientStorageOptions{
		Client:          newHTTPClient(o.HTTPClient, o.HTTPTimeout),
		Ctx:             ctx,
		HTTPTimeout:     o.HTTPTimeout,
		RefreshInterval: o.RefreshInterval,
		RefreshErrorHandler: func(_ context.Context, err error) {
			log.Warn("JWKS refresh failed, keeping the keys fetched before", "error", err.Error())
		},
		Storage: store,
	})
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	if keys, _ := store.KeyReadAll(ctx); len(keys) == 0 {
		return nil, errors.New("fetch JWKS: the set has no RSA or EC P-256 signing key")
	}
	refresher, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: map[string]jwkset.Storage{rawURL: httpStore},
		// Unlimited here because startRefresh applies the real limit first.
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("JWKS client: %w", err)
	}
	return &remoteKeys{
		Storage:   httpStore,
		refresher: refresher,
		limiter:   rate.NewLimiter(rate.Every(o.UnknownKIDRefreshInterval), 1),
		life:      ctx,
		timeout:   o.HTTPTimeout,
	}, nil
}

// KeyRead returns the key with this kid, fetching the set again first when the
// kid is unknown and the rate limit allows.
func (r *remoteKeys) KeyRead(ctx context.Context, kid string) (jwkset.JWK, error) {
	j, err := r.Storage.KeyRead(ctx, kid)
	if !errors.Is(err, jwkset.ErrKeyNotFound) {
		return j, err
	}
	done := r.startRefresh(kid)
	if done == nil {
		return j, err
	}
	select {
	case <-done:
	case <-ctx.Done():
		return jwkset.JWK{}, ctx.Err()
	}
	return r.Storage.KeyRead(ctx, kid)
}

// startRefresh returns a channel closed when a fetch ends: the one already
// running, or a new one if the limiter allows it now. It returns nil when no
// fetch may happen.
func (r *remoteKeys) startRefresh(kid string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight != nil {
		return r.inflight
	}
	if !r.limiter.Allow() {
		return nil
	}
	done := make(chan struct{})
	r.inflight = done
	go func() {
		// Detached from the request that started it, so that one caller
		// giving up does not cancel the fetch the others wait for.
		ctx, cancel := context.WithTimeout(r.life, r.timeout)
		defer cancel()
		// The result is read again by each waiter; a failed fetch has gone to
		// the refresh error handler.
		_, _ = r.refresher.KeyRead(ctx, kid)
		r.mu.Lock()
		r.inflight = nil
		r.mu.Unlock()
		close(done)
	}()
	return done
}

// checkJWKSURL accepts https URLs, and plain http only to a loopback address
// (tests, a sidecar): keys fetched in the clear over a network could be
// anyone's.
func checkJWKSURL(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("JWKS URL: %w", err)
	}
	if u.User != nil {
		return errors.New("JWKS URL must not carry credentials")
	}
	if u.Host == "" {
		return errors.New("JWKS URL has no host")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsLoopback() {
			return nil
		}
		return errors.New("JWKS URL must use https (plain http only to a loopback address)")
	default:
		return fmt.Errorf("JWKS URL scheme %q is not https", u.Scheme)
	}
}

// newHTTPClient returns a client for JWKS fetches: bounded in time and in body
// size, and refusing redirects. base, if given, supplies the transport (for
// example a custom CA) and is not modified.
func newHTTPClient(base *http.Client, timeout time.Duration) *http.Client {
	c := &http.Client{}
	if base != nil {
		*c = *base
	}
	if c.Timeout == 0 || c.Timeout > timeout {
		c.Timeout = timeout
	}
	rt := c.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	c.Transport = cappedBody{next: rt, limit: maxJWKSBytes}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return errRedirect }
	return c
}

// cappedBody makes a response body fail once it passes limit bytes, so that a
// hostile or broken endpoint cannot make kluis decode an endless JWKS.
type cappedBody struct {
	next  http.RoundTripper
	limit int64
}

// RoundTrip implements http.RoundTripper.
func (c cappedBody) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = http.MaxBytesReader(nil, resp.Body, c.limit)
	return resp, nil
}
