// Package apitest starts kluis's two listeners for tests: a real database,
// the real audit log, the real token verifier over test keys, and the
// internal listener behind mutual TLS with a throwaway CA. Feature tests build
// on it to test through HTTP exactly as clients do.
package apitest

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/devpki"
	"github.com/kluis-dev/kluis/api/idempotency"
	"github.com/kluis-dev/kluis/api/jwtauth"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/hosted"
	"github.com/kluis-dev/kluis/logging"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/localkek"
	"github.com/kluis-dev/kluis/verification"
)

// Policy is the service policy the test listeners run with.
const Policy = `
services:
  payments:
    reveal:
      kinds: [bank_access_token, account_number]
      purposes: [payment_initiation, balance_check]
  reporting:
    reveal:
      kinds: [account_number]
      purposes: [statement]
  compliance-console:
    compliance: true
`

func localProvider(t testing.TB) vault.KeyProvider {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kek.b64")
	if err := localkek.Generate(path); err != nil {
		t.Fatal(err)
	}
	p, err := localkek.New(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// testWriter copies server logs into the test's own log when -v is given,
// which helps when a test fails.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// Env is a running pair of listeners.
type Env struct {
	DB       *postgres.DB
	DBURL    string
	Deps     *api.Deps
	Public   *httptest.Server
	Internal *httptest.Server
	CA       *devpki.CA
	// Logs holds everything the server logged, for canary searches.
	Logs *SyncBuffer
	// The vault the listeners use.
	Keys   vault.KeyProvider
	Ring   *vault.KeyRing
	Store  *vault.Store
	System *vault.SystemKeys
	// Echo instances, so a test can add a route before requests arrive.
	PublicEcho, InternalEcho *echo.Echo

	// checked: requests and responses are validated against the contract
	// (unless WithoutContractCheck).
	checked bool
}

// handler is what a listener serves: the echo instance, checked against
// api/openapi.yaml unless the test opted out.
func (env *Env) handler(t testing.TB, listener string, e *echo.Echo) http.Handler {
	t.Helper()
	if !env.checked {
		return e
	}
	return checkContract(t, listener, e)
}

// Option adjusts Deps before the listeners start.
type Option func(*api.Deps)

// Start builds Deps over a fresh database, with the local development key
// provider, and starts both listeners.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	return StartWith(t, localProvider(t), opts...)
}

// StartWith is Start with the given root-key provider (a KMS or Transit
// provider pointed at an in-test server, say).
func StartWith(t testing.TB, keys vault.KeyProvider, opts ...Option) *Env {
	t.Helper()
	db, u := pgtest.Open(t)
	return start(t, db, u, keys, opts...)
}

// StartOn is Start over the already migrated database at url instead of a
// fresh one from pgtest: for a test that runs, stops and restarts a Postgres
// server of its own. The pool is closed at t's end.
func StartOn(t testing.TB, url string, opts ...Option) *Env {
	t.Helper()
	db, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatalf("apitest: open: %v", err)
	}
	t.Cleanup(db.Close)
	return start(t, db, url, localProvider(t), opts...)
}

func start(t testing.TB, db *postgres.DB, u string, keys vault.KeyProvider, opts ...Option) *Env {
	t.Helper()
	ctx := context.Background()
	logs := &SyncBuffer{}
	logger := logging.New(io.MultiWriter(logs, testWriter{t}), slog.LevelDebug)
	sys, err := vault.LoadSystemKeys(ctx, db, keys, SystemKeyNames()...)
	if err != nil {
		t.Fatalf("apitest: system keys: %v", err)
	}
	t.Cleanup(sys.Close)
	ring := vault.NewKeyRing(keys, vault.CacheOptions{})
	store := vault.NewStore(db, ring, sys, CredentialKinds())
	// As `kluis serve` does at start: the keyring keys are loaded before any
	// request's transaction needs them.
	if err := ring.LoadKeyring(ctx, db.Aside()); err != nil {
		t.Fatalf("apitest: keyring: %v", err)
	}
	verifier, err := jwtauth.New(ctx, jwtauth.Options{
		JWKSFile: jwttest.WriteJWKS(t, jwttest.DefaultKeys()...), Issuer: jwttest.Issuer,
		UserAudience: jwttest.UserAudience, StaffAudience: jwttest.StaffAudience, Logger: logger,
	})
	if err != nil {
		t.Fatalf("apitest: verifier: %v", err)
	}
	t.Cleanup(verifier.Close)
	policy, err := api.ParsePolicy([]byte(Policy))
	if err != nil {
		t.Fatalf("apitest: policy: %v", err)
	}
	d := &api.Deps{
		// No sealer runs here (tests seal when they need to): an entry is
		// overdue only after 10 minutes, longer than any test.
		DB: db, Auditor: audit.NewAuditor(db, sys, nil), Pseudonyms: sys, MACs: sys, AuditHeads: sys, AuditSealInterval: time.Minute,
		Auth: api.JWTAuthenticator{Verifier: verifier}, Policy: policy, Vault: store, Logger: logger,
		Ready: map[string]func(context.Context) error{
			"database":     db.Ping,
			"key_provider": func(ctx context.Context) error { _, err := keys.Describe(ctx); return err },
		},
		RequestTimeout: 5 * time.Second,
	}
	for _, o := range opts {
		o(d)
	}
	runRefusals(t, d, logger)
	_, unchecked := uncheckedDeps.LoadAndDelete(d)
	env := &Env{DB: db, DBURL: u, Deps: d, Logs: logs, Keys: keys, Ring: ring, Store: store, System: sys, checked: !unchecked}
	env.PublicEcho = api.NewPublic(d)
	env.Public = httptest.NewServer(env.handler(t, ListenerPublic, env.PublicEcho))
	t.Cleanup(env.Public.Close)
	env.startInternal(t)
	return env
}

// runRefusals runs the aggregated audit of refusals as `kluis serve` does,
// writing what is left when the test ends (before its database goes).
// Tests that look for an entry call env.Deps.Refusals.Flush first.
func runRefusals(t testing.TB, d *api.Deps, logger *slog.Logger) {
	t.Helper()
	if d.Refusals == nil {
		d.Refusals = compliance.NewRefusals(d.Auditor, compliance.RefusalOptions{Clock: d.Clock, Logger: logger})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Refusals.Run(ctx, time.Second) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (env *Env) startInternal(t testing.TB) {
	t.Helper()
	ca, err := devpki.NewCA("kluis test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	env.CA = ca
	dir := t.TempDir()
	server, err := ca.Server("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := server.Write(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := api.InternalTLSConfig(certFile, keyFile, caFile)
	if err != nil {
		t.Fatal(err)
	}
	env.InternalEcho = api.NewInternal(env.Deps)
	srv := httptest.NewUnstartedServer(env.handler(t, ListenerInternal, env.InternalEcho))
	srv.TLS = cfg
	// Refused handshakes are expected in these tests; keep them out of the output.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	env.Internal = srv
}

// ServiceClient returns an HTTP client presenting a client certificate for
// service (as a spiffe:// URI SAN, and as CN) signed by the test CA.
func (env *Env) ServiceClient(t testing.TB, service string) *http.Client {
	t.Helper()
	pair, err := env.CA.Client(service, "spiffe://kluis.test/"+service)
	if err != nil {
		t.Fatal(err)
	}
	return ClientWith(t, env.CA, &pair)
}

// ClientWith returns a client that trusts ca and presents pair (none if nil).
func ClientWith(t testing.TB, ca *devpki.CA, pair *devpki.Pair) *http.Client {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	if pair != nil {
		cert, err := pair.TLS()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	// Enough idle connections that concurrent callers reuse them instead of
	// paying a TLS handshake each.
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
}

// Do sends a request and returns the status, headers and body.
func Do(t testing.TB, c *http.Client, method, url, token, contentType, body string) (int, http.Header, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// SyncBuffer is a bytes buffer safe for concurrent writers.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write implements io.Writer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// SystemKeyNames are the system keys cmd/kluis loads: the vault's own and
// each feature's.
func SystemKeyNames() []string {
	return slices.Concat(vault.DefaultSystemKeys, verification.SystemKeys(), banklink.SystemKeys(),
		idempotency.SystemKeys(), hosted.SystemKeys())
}

// CredentialKinds is the registry of credential kinds cmd/kluis builds
// (openVault): what each feature keeps in the vault.
func CredentialKinds() *vault.Kinds {
	return vault.MustKinds(slices.Concat(banklink.CredentialKinds(), verification.CredentialKinds())...)
}
