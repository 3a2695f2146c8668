package api_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/breaker"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/awskms"
	"github.com/kluis-dev/kluis/vault/awskms/kmstest"
)

// correctnessBound is how far past its deadline a request may answer: not a
// performance figure, only a guard against requests that hang.
const correctnessBound = 2 * time.Second

// plainClient is the client for the public listener in these tests: a
// request that hangs fails the test at its timeout instead of hanging it.
var plainClient = &http.Client{Timeout: 30 * time.Second}

// timed sends a request (with plainClient if c is nil) and returns its
// status, headers and duration.
func timed(t *testing.T, c *http.Client, method, url, token, body string) (int, http.Header, string, time.Duration) {
	t.Helper()
	if c == nil {
		c = plainClient
	}
	start := time.Now()
	status, h, b := apitest.Do(t, c, method, url, token, "application/json", body)
	return status, h, b, time.Since(start)
}

// needsDatabase sends a request that cannot be answered without the
// database: a keyed POST under /v1 (the Idempotency-Key layer records the
// subject and claims the key before the route answers 404). A refused token
// no longer is one: refusals are counted in memory and audited in aggregate.
func needsDatabase(t *testing.T, url string) (int, http.Header, string, time.Duration) {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+jwttest.Token(t, jwttest.WithSubject("user_outage")))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "outage-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	start := time.Now()
	resp, err := plainClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), time.Since(start)
}

// throughProxy points the listeners' database (handlers, audit log,
// idempotency store, readiness) at the same database through an embedded
// toxiproxy, and sets the request deadline.
func throughProxy(t *testing.T, proxy **toxicProxy, timeout time.Duration) apitest.Option {
	return func(d *api.Deps) {
		cfg := d.DB.Pool.Config().ConnConfig
		p := newToxicProxy(t, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
		*proxy = p
		host, port, _ := net.SplitHostPort(p.addr)
		url := "postgres://" + cfg.User + "@" + host + ":" + port + "/" + cfg.Database + "?sslmode=disable&connect_timeout=2"
		db, err := postgres.Open(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		d.DB = db
		d.Auditor = audit.NewAuditor(db, d.Pseudonyms, nil)
		d.Ready["database"] = db.Ping
		d.RequestTimeout = timeout
	}
}

// mustBeUnavailable checks a 503 with Retry-After that came within the
// deadline (and the correctness margin).
func mustBeUnavailable(t *testing.T, what string, deadline time.Duration, status int, h http.Header, body string, took time.Duration) {
	t.Helper()
	mustError(t, status, body, 503, "unavailable")
	if h.Get("Retry-After") == "" || took > deadline+correctnessBound {
		t.Fatalf("%s: Retry-After %q after %s; want one within %s", what, h.Get("Retry-After"), took, deadline+correctnessBound)
	}
}

// TestPostgresOutage: with the database black-holed, resetting or refusing
// connections, requests that need it answer 503 with Retry-After within
// their deadline, /readyz says 503, a refused token still gets its 401 (its
// audit entry is aggregated and written later), and all of it recovers on
// its own when the database is back.
func TestPostgresOutage(t *testing.T) {
	const deadline = 1500 * time.Millisecond
	var proxy *toxicProxy
	env := apitest.Start(t, throughProxy(t, &proxy, deadline))
	bad := env.Public.URL + "/v1/anything"

	for _, c := range []struct {
		name  string
		fault func()
	}{
		{"a black hole: the database vanished without a word", func() { proxy.inject(blackHole...) }},
		{"every connection reset", func() { proxy.inject(resets...) }},
		{"connections refused", proxy.refuse},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.fault()
			status, h, body, took := needsDatabase(t, bad)
			mustBeUnavailable(t, "a request that needs the database during the outage", deadline, status, h, body, took)
			status, _, body, _ = timed(t, nil, "GET", bad, "not-a-token", "")
			mustError(t, status, body, 401, "unauthenticated")
			status, h, body, took = timed(t, nil, "GET", env.Public.URL+"/readyz", "", "")
			mustBeUnavailable(t, "readyz during the outage", deadline, status, h, body, took)

			proxy.heal()
			waitFor(t, 15*time.Second, func() bool {
				status, _, _, _ := timed(t, nil, "GET", env.Public.URL+"/readyz", "", "")
				return status == 200
			})
			status, _, body, _ = needsDatabase(t, bad)
			mustError(t, status, body, 404, "not_found")
		})
	}
}

// TestSlowDatabaseAnswersWithinTheDeadline delays every answer beyond the
// deadline: requests still answer in time.
func TestSlowDatabaseAnswersWithinTheDeadline(t *testing.T) {
	const deadline = time.Second
	var proxy *toxicProxy
	env := apitest.Start(t, throughProxy(t, &proxy, deadline))
	proxy.inject(latency(3000))
	status, h, body, took := needsDatabase(t, env.Public.URL+"/v1/anything")
	mustBeUnavailable(t, "a request that needs the database, with a slow database", deadline, status, h, body, took)
	proxy.heal()
	waitFor(t, 15*time.Second, func() bool {
		status, _, _, _ := timed(t, nil, "GET", env.Public.URL+"/readyz", "", "")
		return status == 200
	})
}

// TestASlowChoppyDatabaseWithinTheDeadlineIsNoOutage: answers late (well
// inside the deadline) and cut into small segments are still answers: no
// 503, and a request that needs the database gets its answer.
func TestASlowChoppyDatabaseWithinTheDeadlineIsNoOutage(t *testing.T) {
	var proxy *toxicProxy
	env := apitest.Start(t, throughProxy(t, &proxy, 10*time.Second))
	proxy.inject(latency(20), slicer())
	status, _, body, _ := needsDatabase(t, env.Public.URL+"/v1/anything")
	mustError(t, status, body, 404, "not_found")
	status, _, body, _ = timed(t, nil, "GET", env.Public.URL+"/readyz", "", "")
	if status != 200 {
		t.Fatalf("readyz with a slow database = %d, want 200: %s", status, body)
	}
}

// TestPostgresStoppedAndStartedAgain stops a real Postgres server (a
// private one: the shared server stays up for the other packages): requests
// that need the database, on both listeners, answer 503 with Retry-After
// within their deadline, /readyz says 503 while /healthz still says the
// process is up; once the server is started again, kluis reconnects on its
// own and serves what it stored before.
func TestPostgresStoppedAndStartedAgain(t *testing.T) {
	const deadline = 1500 * time.Millisecond
	pg := startPgServer(t)
	env := apitest.StartOn(t, pg.url(), func(d *api.Deps) { d.RequestTimeout = deadline })
	secret := `{"access_token":"access-sandbox-restart","provider":"sandbox"}`
	ref := sealFor(t, env, "user_restart_1", banklink.KindAccessToken, secret)
	client := env.ServiceClient(t, "payments")
	reveal := func() (int, http.Header, string, time.Duration) {
		return timed(t, client, "POST", revealURL(env, ref), "", `{"purpose":"payment_initiation"}`)
	}
	bad := env.Public.URL + "/v1/anything"
	if status, _, body, _ := reveal(); status != 200 || !strings.Contains(body, "access-sandbox-restart") {
		t.Fatalf("reveal before the stop = %d: %s", status, body)
	}

	pg.stop()
	status, h, body, took := reveal()
	mustBeUnavailable(t, "reveal with Postgres stopped", deadline, status, h, body, took)
	status, h, body, took = needsDatabase(t, bad)
	mustBeUnavailable(t, "a request that needs the database with Postgres stopped", deadline, status, h, body, took)
	for _, base := range []struct {
		c   *http.Client
		url string
	}{{nil, env.Public.URL}, {client, env.Internal.URL}} {
		status, h, body, took = timed(t, base.c, "GET", base.url+"/readyz", "", "")
		mustBeUnavailable(t, "readyz with Postgres stopped", deadline, status, h, body, took)
		if status, _, body, _ := timed(t, base.c, "GET", base.url+"/healthz", "", ""); status != 200 {
			t.Fatalf("healthz with Postgres stopped = %d, want 200 (the process is up): %s", status, body)
		}
	}

	pg.start()
	waitFor(t, 15*time.Second, func() bool {
		status, _, _, _ := timed(t, nil, "GET", env.Public.URL+"/readyz", "", "")
		return status == 200
	})
	if status, _, body, _ := reveal(); status != 200 || !strings.Contains(body, "access-sandbox-restart") {
		t.Fatalf("reveal after the restart = %d: %s", status, body)
	}
	status, _, body, _ = needsDatabase(t, bad)
	mustError(t, status, body, 404, "not_found")
}

// TestSlowKeyProviderAnswersInTimeAndTheBreakerOpensThenCloses hangs KMS:
// reveals answer 503 within the deadline; after two of them the breaker
// opens and answers at once without calling KMS; once KMS is back and the
// breaker's wait is over, reveals work again.
func TestSlowKeyProviderAnswersInTimeAndTheBreakerOpensThenCloses(t *testing.T) {
	const deadline = time.Second
	const openFor = 1500 * time.Millisecond
	kms := kmstest.NewServer(t)
	// A key load runs detached from the request that started it (it serves
	// every waiter), so what bounds it, and makes the breaker count a
	// failure, is the provider's call timeout: below the request deadline.
	const callTimeout = 700 * time.Millisecond
	keys := vault.GuardKeyProvider(kmstest.Provider(t, kms, awskms.WithCallTimeout(callTimeout)), breaker.Options{Failures: 2, OpenFor: openFor})
	env := apitest.StartWith(t, keys, func(d *api.Deps) { d.RequestTimeout = deadline })
	secret := `{"access_token":"access-sandbox-outage","provider":"sandbox"}`
	ref := sealFor(t, env, "user_outage_1", banklink.KindAccessToken, secret)
	client := env.ServiceClient(t, "payments")
	reveal := func() (int, http.Header, string, time.Duration) {
		env.Ring.Purge() // a cold cache: each reveal must ask KMS
		return timed(t, client, "POST", revealURL(env, ref), "", `{"purpose":"payment_initiation"}`)
	}

	kms.Hang()
	// Reveal until two loads in a row have failed and the breaker is open:
	// normally two reveals, but on a loaded machine a reveal may reach its
	// deadline before its load's call timeout, and the next reveal then
	// joins that load instead of adding a failure. Every one of them is a
	// 503 in time; the loop is bounded.
	for end := time.Now().Add(10 * time.Second); keys.State() != 2; {
		if time.Now().After(end) {
			t.Fatalf("breaker state = %d, want open after repeated timeouts", keys.State())
		}
		status, h, body, took := reveal()
		mustBeUnavailable(t, "reveal with KMS hanging", deadline, status, h, body, took)
	}
	calls := kms.Calls("Decrypt")
	status, _, body, took := reveal()
	mustError(t, status, body, 503, "unavailable")
	if kms.Calls("Decrypt") != calls || took > deadline {
		t.Fatalf("open breaker: KMS called %d more times, answer after %s; want no call and an answer before the deadline", kms.Calls("Decrypt")-calls, took)
	}

	kms.Release()
	waitFor(t, 10*time.Second, func() bool {
		status, _, body, _ := reveal()
		return status == 200 && strings.Contains(body, "access-sandbox-outage")
	})
	if keys.State() != 0 {
		t.Fatalf("breaker state = %d, want closed after recovery", keys.State())
	}
}

// waitFor polls cond until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(within)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("condition not met within %s", within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Server limits: what keeps slow or greedy clients from holding kluis.

// TestASlowlorisClientIsCutOff trickles a request's headers one line a
// second: the server closes the connection once the read-header timeout
// (5 s) has passed, instead of waiting for the headers to end.
func TestASlowlorisClientIsCutOff(t *testing.T) {
	t.Parallel()
	srv := api.NewHTTPServer("127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), time.Second)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: kluis\r\n"); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, err := io.WriteString(c, "X-Trickle: "+strconv.Itoa(i)+"\r\n"); err != nil {
			break // cut off
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			break // closed by the server
		}
		if time.Since(start) > 5*time.Second+correctnessBound+time.Second {
			t.Fatalf("still connected after %s of trickled headers", time.Since(start))
		}
	}
}

// TestOversizedHeadersAreRefused sends 100 KiB of headers: 431.
func TestOversizedHeadersAreRefused(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	srv.Config = api.NewHTTPServer("", srv.Config.Handler, time.Second)
	srv.Start()
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("X-Big", strings.Repeat("a", 100<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status = %d, want 431", resp.StatusCode)
	}
}

// TestBothListenersRefuseTLS11 checks the TLS floor of both listeners: a
// TLS 1.1 client is refused, a TLS 1.2 one is served.
func TestBothListenersRefuseTLS11(t *testing.T) {
	env := apitest.Start(t)
	pair, err := env.CA.Server("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := pair.Write(t.TempDir(), "public")
	if err != nil {
		t.Fatal(err)
	}
	pubTLS, err := api.PublicTLSConfig(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pub := httptest.NewUnstartedServer(env.PublicEcho)
	pub.TLS = pubTLS
	pub.StartTLS()
	t.Cleanup(pub.Close)
	client, err := env.CA.Client("payments", "spiffe://kluis.test/payments")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := client.TLS()
	if err != nil {
		t.Fatal(err)
	}
	for name, addr := range map[string]string{"public": pub.Listener.Addr().String(), "internal": env.Internal.Listener.Addr().String()} {
		for _, v := range []struct {
			version uint16
			ok      bool
		}{{tls.VersionTLS11, false}, {tls.VersionTLS12, true}, {tls.VersionTLS13, true}} {
			cfg := &tls.Config{RootCAs: env.CA.Pool(), MinVersion: tls.VersionTLS10, MaxVersion: v.version, // #nosec G402 -- the test offers old versions on purpose
				Certificates: []tls.Certificate{cert}}
			c, err := tls.Dial("tcp", addr, cfg)
			if err == nil {
				err = c.Handshake()
				c.Close()
			}
			if (err == nil) != v.ok {
				t.Errorf("%s listener, client at most %s: handshake error %v, want ok %v", name, tls.VersionName(v.version), err, v.ok)
			}
		}
	}
}
