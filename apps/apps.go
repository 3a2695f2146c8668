// Package apps is kluis's registry of client apps. An app is a registered
// client of kluis (a consumer app, a merchant app, a back office): it has
// its own id, the issuer and audience of its users' tokens (and, if it
// wants, its own JWKS), the origins and redirect URIs its hosted pages may
// use, its Plaid Link settings, and its event endpoints with their webhook
// secrets. Every data subject belongs to one app (the vault's subjects
// carry the app id), and a user token is matched to its app by issuer and
// audience.
//
// Apps are defined in a YAML file (KLUIS_APPS_FILE) kept in force like the
// service policy: read again every PollInterval and on SIGHUP, a file that
// does not load keeping the apps in force. Without a file, today's
// single-app settings (KLUIS_JWT_*, KLUIS_PLAID_*, KLUIS_WEBHOOK_*) are the
// one app kluis.DefaultApp.
package apps

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidlink"
)

// Limits of an apps file.
const (
	// MaxApps bounds the apps of one kluis.
	MaxApps = 100
	// MaxEndpoints bounds one app's event endpoints.
	MaxEndpoints = 10
	// MaxSecrets is how many webhook secrets an endpoint signs with at
	// once: the current one and, during a rotation, the one being retired.
	MaxSecrets = 2
	// MinSecretBytes is the least length of a webhook secret.
	MinSecretBytes = 32
	// maxListLen bounds origins and redirect URIs per app.
	maxListLen = 50
)

// App is one registered client of kluis. Treat it as read-only: a Set is
// shared by every request.
type App struct {
	// ID names the app: kluis.ValidAppID.
	ID string
	// JWT says which user tokens are this app's.
	JWT JWT
	// AllowedOrigins are the exact origins ("https://app.example.com") a
	// browser may call kluis's hosted pages from on this app's behalf.
	AllowedOrigins []string
	// RedirectURIs are the exact URIs a hosted page may send the user back
	// to when it is done.
	RedirectURIs []string
	// PlaidLink are the app's Plaid Link settings (the name Link shows,
	// countries, language, OAuth redirect, Android package).
	PlaidLink plaidlink.Settings
	// Endpoints receive the app's events, and only the app's.
	Endpoints []Endpoint
}

// JWT identifies an app's user tokens: iss must be Issuer and aud must
// contain Audience. JWKSURL or JWKSFile, when set, are the app's own keys;
// otherwise the global KLUIS_JWT_JWKS_* keys verify them.
type JWT struct {
	Issuer, Audience  string
	JWKSURL, JWKSFile string
}

// OwnKeys reports whether the app's tokens are verified by a JWKS of its own.
func (j JWT) OwnKeys() bool { return j.JWKSURL != "" || j.JWKSFile != "" }

// Endpoint is one URL an app's events go to.
type Endpoint struct {
	// App is the app the endpoint belongs to.
	App string
	// ID is the endpoint's configured id: the metrics label, and what
	// operators and the replay route name it by. It never holds the URL.
	ID string
	// Key is how deliveries to it are stored (outbox_targets.endpoint_id):
	// "<app>/<id>" for endpoints of an apps file; for the endpoints of
	// KLUIS_WEBHOOK_ENDPOINTS a hash of the URL, as before apps existed,
	// so that deliveries pending across the upgrade go on.
	Key string
	// URL is where deliveries are posted. It may carry a token: it is
	// never logged, stored or used as a label.
	URL string
	// Secrets sign deliveries; see Active.
	Secrets []Secret
}

// Secret is one webhook secret of an endpoint.
type Secret struct {
	// Key is the HMAC key: at least MinSecretBytes bytes.
	Key []byte
	// RetireAt, when set, is when the secret stops signing: the old secret
	// of a rotation carries the date by which every receiver has the new one.
	RetireAt time.Time
}

// Active returns the keys that sign a delivery at now: every secret not yet
// retired (one, or two during a rotation). None means the endpoint cannot
// sign: its deliveries wait rather than go out unsigned.
func (e Endpoint) Active(now time.Time) [][]byte {
	var out [][]byte
	for _, s := range e.Secrets {
		if s.RetireAt.IsZero() || now.Before(s.RetireAt) {
			out = append(out, s.Key)
		}
	}
	return out
}

// Display is the endpoint's URL without userinfo, query or fragment (any
// of which may hold a token), for people reading delivery records.
func (e Endpoint) Display() string {
	u, err := url.Parse(e.URL)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}

// AllowsOrigin reports whether origin is one of the app's allowed origins
// (exact match: scheme, host and port).
func (a *App) AllowsOrigin(origin string) bool {
	return origin != "" && slices.Contains(a.AllowedOrigins, origin)
}

// AllowsRedirect reports whether uri is exactly one of the app's redirect
// URIs: no prefix or pattern matching, which open redirects are made of.
func (a *App) AllowsRedirect(uri string) bool {
	return uri != "" && slices.Contains(a.RedirectURIs, uri)
}

// Set is one version of the apps in force. It is immutable once built.
type Set struct {
	apps map[string]*App
	ids  []string
}

// newSet checks apps as a whole and indexes them.
func newSet(list []*App) (*Set, error) {
	if len(list) == 0 {
		return nil, errors.New("no app defined")
	}
	if len(list) > MaxApps {
		return nil, fmt.Errorf("more than %d apps", MaxApps)
	}
	s := &Set{apps: map[string]*App{}}
	tokens := map[[2]string]string{}
	keys := map[string]string{}
	for _, a := range list {
		if _, dup := s.apps[a.ID]; dup {
			return nil, fmt.Errorf("app %q is defined twice", a.ID)
		}
		// One issuer and audience name one app: otherwise a token would be
		// the user of two apps at once.
		ia := [2]string{a.JWT.Issuer, a.JWT.Audience}
		if other, dup := tokens[ia]; dup {
			return nil, fmt.Errorf("apps %q and %q have the same JWT issuer and audience", min(a.ID, other), max(a.ID, other))
		}
		tokens[ia] = a.ID
		for _, e := range a.Endpoints {
			if other, dup := keys[e.Key]; dup {
				return nil, fmt.Errorf("apps %q and %q have the same event endpoint", min(a.ID, other), max(a.ID, other))
			}
			keys[e.Key] = a.ID
		}
		s.apps[a.ID] = a
		s.ids = append(s.ids, a.ID)
	}
	sort.Strings(s.ids)
	return s, nil
}

// App returns the app named id.
func (s *Set) App(id string) (*App, bool) {
	a, ok := s.apps[id]
	return a, ok
}

// IDs lists the apps' ids, sorted.
func (s *Set) IDs() []string { return slices.Clone(s.ids) }

// Len is the number of apps.
func (s *Set) Len() int { return len(s.ids) }

// Only returns the one app when there is exactly one (a route that names a
// subject needs no `?app=` then).
func (s *Set) Only() (*App, bool) {
	if len(s.ids) != 1 {
		return nil, false
	}
	return s.apps[s.ids[0]], true
}

// Errors of ForToken; both are a 401 to the caller.
var (
	ErrNoApp        = errors.New("no app has this token's issuer and audience")
	ErrAmbiguousApp = errors.New("the token names the audiences of more than one app")
)

// ForToken returns the app whose users' tokens have issuer iss and
// audiences aud: exactly one app's issuer and audience must match. The
// claims are not verified yet; the caller verifies the token with the
// returned app's settings, which checks them again.
func (s *Set) ForToken(iss string, aud []string) (*App, error) {
	var found *App
	for _, id := range s.ids {
		a := s.apps[id]
		if a.JWT.Issuer != iss || !slices.Contains(aud, a.JWT.Audience) {
			continue
		}
		if found != nil {
			return nil, ErrAmbiguousApp
		}
		found = a
	}
	if found == nil {
		return nil, ErrNoApp
	}
	return found, nil
}

// Endpoints lists every app's event endpoints.
func (s *Set) Endpoints() []Endpoint {
	var out []Endpoint
	for _, id := range s.ids {
		out = append(out, s.apps[id].Endpoints...)
	}
	return out
}

// checkURL checks a URL setting: absolute http(s), https unless it points
// at this machine in development; nothing but scheme, host and path for an
// origin.
func checkURL(raw string, production, origin bool) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		return errors.New("is not an absolute http(s) URL")
	case u.Scheme == "http" && (production || !loopback(u.Hostname())):
		return errors.New("must be https (plain http only for localhost in development)")
	case origin && (u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil):
		return errors.New("an origin is scheme://host[:port] only")
	case u.Fragment != "":
		return errors.New("must not have a fragment")
	}
	return nil
}

func loopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1" || strings.HasSuffix(host, ".localhost")
}

// validID reports whether id may name an app or an endpoint.
func validID(id string) bool { return kluis.ValidAppID(id) }
