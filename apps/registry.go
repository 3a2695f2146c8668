package apps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidlink"
	"github.com/kluis-dev/kluis/filewatch"
)

// PollInterval is how often a watched apps file is read for changes: a
// change is in force within 5 seconds.
const PollInterval = 2 * time.Second

// Registry holds the apps in force. Reload and Watch swap a new version in
// atomically: a request sees the old apps or the new ones, never a mix,
// and a file that does not load (or that a Check refuses) leaves the apps
// in force as they are. It is safe for concurrent use.
type Registry struct {
	cur  atomic.Pointer[Set]
	path string
	opts Options

	mu     sync.Mutex // serializes reloads and checks
	sum    [sha256.Size]byte
	checks []func(*Set) error
}

// Static returns a Registry that always holds set (no file behind it).
func Static(set *Set) *Registry {
	r := &Registry{}
	r.cur.Store(set)
	return r
}

// Load reads and checks the apps file at path and remembers it for Reload
// and Watch.
func Load(path string, o Options) (*Registry, error) {
	raw, err := os.ReadFile(path) // #nosec G304 -- KLUIS_APPS_FILE, the operator's setting
	if err != nil {
		return nil, fmt.Errorf("apps file: %w", err)
	}
	set, sum, err := Parse(raw, o)
	if err != nil {
		return nil, err
	}
	r := &Registry{path: path, opts: o, sum: sum}
	r.cur.Store(set)
	return r, nil
}

// Current returns the apps in force.
func (r *Registry) Current() *Set { return r.cur.Load() }

// App returns the app in force named id. Hosted pages check an origin or a
// redirect URI with it: app.AllowsOrigin, app.AllowsRedirect.
func (r *Registry) App(id string) (*App, bool) { return r.Current().App(id) }

// AddCheck adds a check that a new version of the apps must pass before it
// is put in force (the token verifier builds the verifiers of apps with
// their own JWKS, say). It runs on the version in force at once, and its
// error is returned: a check that refuses the current apps is a start-up
// error.
func (r *Registry) AddCheck(check func(*Set) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := check(r.Current()); err != nil {
		return err
	}
	r.checks = append(r.checks, check)
	return nil
}

// Reload reads the apps file (and the secret files it names) again and, if
// anything changed and it loads and passes every check, puts it in force.
// It reports whether the apps changed. An error leaves the apps in force.
func (r *Registry) Reload() (changed bool, err error) {
	if r.path == "" {
		return false, errors.New("apps: not loaded from a file")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	raw, err := os.ReadFile(r.path)
	if err != nil {
		return false, fmt.Errorf("apps file: %w", err)
	}
	set, sum, err := Parse(raw, r.opts)
	if err != nil {
		return false, err
	}
	if sum == r.sum {
		return false, nil
	}
	for _, check := range r.checks {
		if err := check(set); err != nil {
			return false, fmt.Errorf("apps file: %w", err)
		}
	}
	r.cur.Store(set)
	r.sum = sum
	return true, nil
}

// Watch reloads the apps file every interval and on hup (SIGHUP) until ctx
// ends (filewatch.Watch).
func (r *Registry) Watch(ctx context.Context, interval time.Duration, hup <-chan os.Signal, logger *slog.Logger) {
	if r.path == "" {
		return
	}
	filewatch.Watch(ctx, "apps file", interval, hup, logger, r.Reload)
}

// FromFile reports whether the apps come from a file (and Watch has
// something to do).
func (r *Registry) FromFile() bool { return r.path != "" }

// Single are today's single-app settings, which make the one app
// kluis.DefaultApp when no apps file is given.
type Single struct {
	Issuer, Audience string
	PlaidLink        plaidlink.Settings
	AllowedOrigins   []string
	RedirectURIs     []string
	// Endpoints are KLUIS_WEBHOOK_ENDPOINTS, all signed with Secret (and,
	// until PreviousRetireAt, also with Previous: a rotation without an
	// apps file).
	Endpoints        []string
	Secret, Previous []byte
	PreviousRetireAt time.Time
	// Production refuses plain-http origins and redirect URIs.
	Production bool
}

// Default builds the one-app Set of the single-app settings. An endpoint's
// Key and ID are a hash of its URL, as stored before apps existed.
func Default(s Single) (*Set, error) {
	if err := checkPages(&App{AllowedOrigins: s.AllowedOrigins, RedirectURIs: s.RedirectURIs}, s.Production); err != nil {
		return nil, fmt.Errorf("KLUIS_ALLOWED_ORIGINS or KLUIS_REDIRECT_URIS: %w", err)
	}
	a := &App{ID: kluis.DefaultApp, JWT: JWT{Issuer: s.Issuer, Audience: s.Audience},
		AllowedOrigins: s.AllowedOrigins, RedirectURIs: s.RedirectURIs, PlaidLink: s.PlaidLink}
	secrets := []Secret{{Key: s.Secret}}
	if len(s.Previous) > 0 {
		secrets = append(secrets, Secret{Key: s.Previous, RetireAt: s.PreviousRetireAt})
	}
	seen := map[string]bool{}
	for _, raw := range s.Endpoints {
		// Configuration checks https in production; here only the form.
		if u, err := url.Parse(raw); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return nil, errors.New("a webhook endpoint is not an http(s) URL") // the URL is not echoed: it may carry a token
		}
		if len(s.Secret) == 0 {
			return nil, errors.New("a webhook secret is required when endpoints are configured")
		}
		sum := sha256.Sum256([]byte(raw))
		key := hex.EncodeToString(sum[:12])
		if seen[key] {
			continue
		}
		seen[key] = true
		a.Endpoints = append(a.Endpoints, Endpoint{App: a.ID, ID: key, Key: key, URL: raw, Secrets: secrets})
	}
	return newSet([]*App{a})
}

// None is the one-app Set of the default app with no settings: for a
// kluis (or a test) that names no apps, whose users are verified elsewhere.
func None() *Set {
	set, _ := newSet([]*App{{ID: kluis.DefaultApp}})
	return set
}
