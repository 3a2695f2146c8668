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
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/awskms/kmstest"
	"github.com/kluis-dev/kluis/vault/breaker"
)

// faultProxy is a TCP proxy that injects the faults of an outage between
// kluis and a dependency: pass (forward), latency (forward, each chunk
// delayed), reset (refuse: connections are closed at once), and black hole
// (connections are accepted and never answered: the worst case, a peer
// that has vanished without a FIN). Changing the mode cuts the connections
// already open, as an outage does.
type faultProxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	mode    string
	latency time.Duration
	conns   map[net.Conn]struct{}
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, mode: "pass", conns: map[net.Conn]struct{}{}}
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.set("reset", 0) })
	return p
}

func (p *faultProxy) addr() string { return p.ln.Addr().String() }

// set changes the mode and cuts every open connection.
func (p *faultProxy) set(mode string, latency time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.latency = mode, latency
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *faultProxy) track(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
}

func (p *faultProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		mode, latency := p.mode, p.latency
		p.mu.Unlock()
		switch mode {
		case "reset":
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // RST, not FIN
			}
			c.Close()
		case "blackhole":
			p.track(c)
			go func() { _, _ = io.Copy(io.Discard, c) }()
		default:
			go p.forward(c, latency)
		}
	}
}

func (p *faultProxy) forward(c net.Conn, latency time.Duration) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.track(c, up)
	pipe := func(dst, src net.Conn) {
		defer dst.Close()
		defer src.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				time.Sleep(latency)
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go pipe(up, c)
	go pipe(c, up)
}

// correctnessBound is how far past its deadline a request may answer: not a
// performance figure, only a guard against requests that hang.
const correctnessBound = 2 * time.Second

// timed sends a request and returns its status, headers and duration.
func timed(t *testing.T, c *http.Client, method, url, token, body string) (int, http.Header, string, time.Duration) {
	t.Helper()
	start := time.Now()
	status, h, b := apitest.Do(t, c, method, url, token, "application/json", body)
	return status, h, b, time.Since(start)
}

// throughProxy points the listeners' database (handlers, audit log,
// idempotency store, readiness) at the same database through a fault proxy.
func throughProxy(t *testing.T, proxy **faultProxy, timeout time.Duration) apitest.Option {
	return func(d *api.Deps) {
		cfg := d.DB.Pool.Config().ConnConfig
		p := newFaultProxy(t, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
		*proxy = p
		host, port, _ := net.SplitHostPort(p.addr())
		url := "postgres://" + cfg.User + "@" + host + ":" + port + "/" + cfg.Database + "?sslmode=disable&connect_timeout=2"
		db, err := postgres.Open(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		d.DB = db
		d.Auditor = compliance.NewAuditor(db, d.Pseudonyms, nil)
		d.Ready["database"] = db.Ping
		d.RequestTimeout = timeout
	}
}

// TestPostgresOutage: with the database black-holed or refusing, requests
// that need it (here: a refused token, whose audit entry must be written
// before the 401) answer 503 with Retry-After
// within their deadline, /readyz says 503, and all of it recovers on its
// own when the database is back.
func TestPostgresOutage(t *testing.T) {
	const deadline = 1500 * time.Millisecond
	var proxy *faultProxy
	env := apitest.Start(t, throughProxy(t, &proxy, deadline))
	bad := env.Public.URL + "/v1/anything"

	for _, fault := range []string{"blackhole", "reset"} {
		t.Run(fault, func(t *testing.T) {
			proxy.set(fault, 0)
			status, h, body, took := timed(t, nil, "GET", bad, "not-a-token", "")
			mustError(t, status, body, 503, "unavailable")
			if h.Get("Retry-After") == "" || took > deadline+correctnessBound {
				t.Fatalf("refused token during the outage: Retry-After %q after %s; want one within %s", h.Get("Retry-After"), took, deadline+correctnessBound)
			}
			status, h, body, took = timed(t, nil, "GET", env.Public.URL+"/readyz", "", "")
			mustError(t, status, body, 503, "unavailable")
			if h.Get("Retry-After") == "" || took > deadline+correctnessBound {
				t.Fatalf("readyz during the outage: Retry-After %q after %s", h.Get("Retry-After"), took)
			}

			proxy.set("pass", 0)
			waitFor(t, 15*time.Second, func() bool {
				status, _, _, _ := timed(t, nil, "GET", env.Public.URL+"/readyz", "", "")
				return status == 200
			})
			status, _, body, _ = timed(t, nil, "GET", bad, "not-a-token", "")
			mustError(t, status, body, 401, "unauthenticated")
		})
	}
}

// TestSlowDatabaseAnswersWithinTheDeadline adds latency beyond the deadline
// to every packet: requests still answer in time.
func TestSlowDatabaseAnswersWithinTheDeadline(t *testing.T) {
	const deadline = time.Second
	var proxy *faultProxy
	env := apitest.Start(t, throughProxy(t, &proxy, deadline))
	proxy.set("pass", 3*time.Second)
	status, h, body, took := timed(t, nil, "GET", env.Public.URL+"/v1/anything", "not-a-token", "")
	mustError(t, status, body, 503, "unavailable")
	if h.Get("Retry-After") == "" || took > deadline+correctnessBound {
		t.Fatalf("Retry-After %q after %s, want one within %s", h.Get("Retry-After"), took, deadline+correctnessBound)
	}
	proxy.set("pass", 0)
	waitFor(t, 15*time.Second, func() bool {
		status, _, _, _ := timed(t, nil, "GET", env.Public.URL+"/readyz", "", "")
		return status == 200
	})
}

// TestSlowKeyProviderAnswersInTimeAndTheBreakerOpensThenCloses hangs KMS:
// reveals answer 503 within the deadline; after two of them the breaker
// opens and answers at once without calling KMS; once KMS is back and the
// breaker's wait is over, reveals work again.
func TestSlowKeyProviderAnswersInTimeAndTheBreakerOpensThenCloses(t *testing.T) {
	const deadline = time.Second
	const openFor = 1500 * time.Millisecond
	kms := kmstest.NewServer(t)
	keys := breaker.New(kmstest.Provider(t, kms), breaker.Options{Failures: 2, OpenFor: openFor})
	env := apitest.StartWith(t, keys, func(d *api.Deps) { d.RequestTimeout = deadline })
	secret := `{"access_token":"access-sandbox-outage","provider":"sandbox"}`
	ref := sealFor(t, env, "user_outage_1", vault.KindBankAccessToken, secret)
	client := env.ServiceClient(t, "payments")
	reveal := func() (int, http.Header, string, time.Duration) {
		env.Ring.Purge() // a cold cache: each reveal must ask KMS
		return timed(t, client, "POST", revealURL(env, ref), "", `{"purpose":"payment_initiation"}`)
	}

	kms.Hang()
	for i := 0; i < 2; i++ {
		status, h, body, took := reveal()
		mustError(t, status, body, 503, "unavailable")
		if h.Get("Retry-After") == "" || took > deadline+correctnessBound {
			t.Fatalf("reveal %d with KMS hanging: Retry-After %q after %s", i, h.Get("Retry-After"), took)
		}
	}
	if keys.State() != 2 {
		t.Fatalf("breaker state = %d, want open after two timeouts", keys.State())
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
			t.Fatalf("did not recover within %s", within)
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
