package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/devpki"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/vault"
)

// Attacks at the edges (issue 11): identities kluis must not accept,
// certificates it must stop accepting, floods its audit log must not take,
// and staff tokens too stale for erasure.

// refusedEntry is one aggregated audit entry of refused requests.
type refusedEntry struct {
	Count   int            `json:"count"`
	Source  string         `json:"source"`
	Kinds   map[string]int `json:"kinds"`
	Reasons map[string]int `json:"reasons"`
	Routes  map[string]int `json:"routes"`
	Actors  map[string]int `json:"actors"`
}

// refusals flushes the aggregated refusals and returns their entries.
func refusals(t *testing.T, env *apitest.Env) []refusedEntry {
	t.Helper()
	if err := env.Deps.Refusals.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	rows, err := env.DB.Pool.Query(context.Background(),
		`SELECT details FROM audit_entries WHERE action = $1 ORDER BY seq`, compliance.ActionRefused)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []refusedEntry
	for rows.Next() {
		var raw []byte
		var e refusedEntry
		if err := rows.Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// sumReasons adds up a reason over entries.
func sumReasons(es []refusedEntry, reason string) int {
	n := 0
	for _, e := range es {
		n += e.Reasons[reason]
	}
	return n
}

// Item 1: with a trust domain, every identity the issue found accepted as
// payments is 403 through a real mutual TLS request, with nothing of the
// reason in the body, and audited.
func TestTheIssuesLenientServiceIdentitiesAreRefused(t *testing.T) {
	env := apitest.Start(t, func(d *api.Deps) { d.TrustDomain = "kluis.dev" })
	metrics := env.Internal.URL + "/metrics"
	cases := []struct {
		name string
		cn   string
		uris []string
	}{
		{"a SPIFFE ID without a path, CN payments", "payments", []string{"spiffe://kluis.dev"}},
		{"a non-SPIFFE URI, CN payments", "payments", []string{"https://payments.kluis.dev/"}},
		{"no URI, CN payments, with a trust domain", "payments", nil},
		{"a trailing slash", "payments", []string{"spiffe://kluis.dev/payments/"}},
		{"an empty segment", "payments", []string{"spiffe://kluis.dev//payments"}},
		{"percent-encoding", "payments", []string{"spiffe://kluis.dev/%70ayments"}},
		{"a query and a fragment", "payments", []string{"spiffe://kluis.dev/payments?x#y"}},
		{"userinfo and an upper-case trust domain", "payments", []string{"spiffe://user@KLUIS.DEV/payments"}},
		{"several URI SANs, the first one good", "payments", []string{"spiffe://kluis.dev/payments", "spiffe://evil.example/payments"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pair, err := env.CA.ClientWithURIs(tc.cn, tc.uris...)
			if err != nil {
				t.Fatal(err)
			}
			status, _, body := apitest.Do(t, apitest.ClientWith(t, env.CA, &pair), "GET", metrics, "", "", "")
			mustError(t, status, body, 403, "forbidden")
			if strings.Contains(body, "payments") || strings.Contains(body, "SPIFFE") || strings.Contains(body, "reason") {
				t.Fatalf("the refusal says why: %s", body)
			}
		})
	}
	t.Run("the one well-formed ID in the trust domain is payments", func(t *testing.T) {
		pair, err := env.CA.ClientWithURIs("anything", "spiffe://kluis.dev/payments")
		if err != nil {
			t.Fatal(err)
		}
		if status, _, body := apitest.Do(t, apitest.ClientWith(t, env.CA, &pair), "GET", metrics, "", "", ""); status != 200 {
			t.Fatalf("status = %d %s, want 200", status, body)
		}
	})
	es := refusals(t, env)
	n := 0
	for _, e := range es {
		n += e.Kinds[compliance.RefusalAuthz]
	}
	if n != len(cases) {
		t.Fatalf("audited %d refusals (%+v), want %d", n, es, len(cases))
	}
}

// policyFile writes a policy file and returns its path and a loaded Policy
// to run the listeners with.
func policyFile(t *testing.T, doc string) (string, *api.Policy) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, path, doc)
	p, err := api.LoadPolicy(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, p
}

// writePolicy replaces the file as an operator's tooling would: a new file
// renamed over the old one.
func writePolicy(t *testing.T, path, doc string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func certOf(t *testing.T, pair devpki.Pair) (serialHex, pin string) {
	t.Helper()
	cert, err := pair.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	// As `openssl x509 -serial` prints it: upper case, whole bytes.
	return strings.ToUpper(fmtBytes(cert.SerialNumber.Bytes())), base64.StdEncoding.EncodeToString(sum[:])
}

func fmtBytes(b []byte) string {
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b)+2)
	out = append(out, '0', '0') // a leading zero byte, as openssl prints for a high first bit
	for _, c := range b {
		out = append(out, hex[c>>4], hex[c&0xf])
	}
	return string(out)
}

// Item 2: a certificate revoked by serial or by key pin is 403 from the
// next request on, on the connection it already has open, without a
// restart; the other services go on.
func TestARevokedCertificateIsRefusedWithoutARestart(t *testing.T) {
	path, policy := policyFile(t, apitest.Policy)
	env := apitest.Start(t, func(d *api.Deps) { d.Policy = policy })
	metrics := env.Internal.URL + "/metrics"
	for _, by := range []string{"serial", "pin"} {
		t.Run("by "+by, func(t *testing.T) {
			pair, err := env.CA.Client("payments", "spiffe://kluis.test/payments")
			if err != nil {
				t.Fatal(err)
			}
			client := apitest.ClientWith(t, env.CA, &pair)
			if status, _, body := apitest.Do(t, client, "GET", metrics, "", "", ""); status != 200 {
				t.Fatalf("before revocation: %d %s", status, body)
			}
			serial, pin := certOf(t, pair)
			revoked := "revoked:\n  serials: [\"" + serial + "\"]\n"
			if by == "pin" {
				revoked = "revoked:\n  spki_sha256: [\"" + pin + "\"]\n"
			}
			writePolicy(t, path, revoked+apitest.Policy)
			if changed, err := policy.Reload(); err != nil || !changed {
				t.Fatalf("reload = %v, %v", changed, err)
			}
			status, _, body := apitest.Do(t, client, "GET", metrics, "", "", "")
			mustError(t, status, body, 403, "forbidden")
			if status, _, _ := apitest.Do(t, env.ServiceClient(t, "payments"), "GET", metrics, "", "", ""); status != 200 {
				t.Fatalf("another certificate of payments = %d, want 200", status)
			}
			writePolicy(t, path, apitest.Policy)
			if _, err := policy.Reload(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if n := sumReasons(refusals(t, env), "certificate revoked"); n != 2 {
		t.Fatalf("audited %d revoked certificates, want 2", n)
	}
}

// Item 2: Watch puts a changed file in force by itself (here polling every
// 50 ms; kluis serve polls every 2 s), keeps the policy in force when the
// new file is bad (and logs it), and reloads on SIGHUP (the channel `kluis
// serve` feeds from signal.Notify).
func TestThePolicyFileIsWatched(t *testing.T) {
	path, policy := policyFile(t, apitest.Policy)
	env := apitest.Start(t, func(d *api.Deps) { d.Policy = policy })
	knows := func(svc string) func() bool { return func() bool { return policy.Knows(svc) } }

	t.Run("a change is put in force", func(t *testing.T) {
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); policy.Watch(ctx, 50*time.Millisecond, nil, env.Deps.Logger) }()
		defer func() { stop(); <-done }()
		writePolicy(t, path, apitest.Policy+"  newcomer: {}\n")
		waitFor(t, 5*time.Second, knows("newcomer"))
		status, _, _ := apitest.Do(t, env.ServiceClient(t, "newcomer"), "GET", env.Internal.URL+"/metrics", "", "", "")
		if status != 200 {
			t.Fatalf("a service added to the file = %d, want 200", status)
		}

		writePolicy(t, path, "services:\n  payments:\n    reveal: {kinds: [everything]}\n")
		waitFor(t, 5*time.Second, func() bool { return strings.Contains(env.Logs.String(), "service policy not reloaded") })
		if !policy.Knows("newcomer") || !policy.MayReveal("payments", "bank_access_token", "payment_initiation") {
			t.Fatal("a bad file changed the policy in force")
		}
		if changed, err := policy.Reload(); err == nil || changed {
			t.Fatalf("reloading a bad file = %v, %v; want an error", changed, err)
		}
	})
	t.Run("SIGHUP reloads at once", func(t *testing.T) {
		hup := make(chan os.Signal, 1)
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); policy.Watch(ctx, time.Hour, hup, env.Deps.Logger) }()
		defer func() { stop(); <-done }()
		writePolicy(t, path, apitest.Policy+"  latecomer: {}\n")
		hup <- os.Interrupt // any signal value: the channel is the SIGHUP one
		waitFor(t, 5*time.Second, knows("latecomer"))
		if policy.Knows("newcomer") {
			t.Fatal("the reloaded policy still names a service the file dropped")
		}
	})
}

// Item 2: requests go on while the policy is swapped under them (run with
// -race).
func TestThePolicyIsSwappedSafelyUnderLoad(t *testing.T) {
	path, policy := policyFile(t, apitest.Policy)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if !policy.Knows("payments") || !policy.MayCarryCompliance("compliance-console") {
					t.Error("a reader saw a policy without payments")
					return
				}
			}
		}()
	}
	for i := 0; i < 50; i++ {
		doc := apitest.Policy
		if i%2 == 0 {
			doc += "  extra: {}\n"
		}
		writePolicy(t, path, doc)
		if _, err := policy.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

// testClock is a clock the test sets.
type setClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *setClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *setClock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

// Item 4: 500 bad tokens from one address in one minute are one audit entry
// with a count of 500, and the token is nowhere in the audit log.
func TestFiveHundredBadTokensAreOneAuditEntry(t *testing.T) {
	minute := time.Now().UTC().Truncate(time.Minute)
	clock := &setClock{t: minute.Add(time.Second)}
	env := apitest.Start(t, func(d *api.Deps) { d.Clock = clock })
	const canary = "kluis-canary-7f3a9b2e"
	var wg sync.WaitGroup
	for g := 0; g < 10; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				status, _, body := apitest.Do(t, nil, "GET", env.Public.URL+"/v1/items", canary, "", "")
				if status != 401 || !strings.Contains(body, `"unauthenticated"`) {
					t.Errorf("bad token = %d %s, want 401", status, body)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := env.Deps.Refusals.FlushDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := env.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM audit_entries`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d audit entries before the minute ended (%v), want 0", n, err)
	}
	clock.Set(minute.Add(time.Minute))
	if err := env.Deps.Refusals.FlushDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	es := refusals(t, env)
	// (Without bank linking, /v1/items is the group's catch-all route.)
	if len(es) != 1 || es[0].Count != 500 || es[0].Kinds[compliance.RefusalAuthn] != 500 || es[0].Routes["GET /v1/*"] != 500 {
		t.Fatalf("entries = %+v, want one of 500 failed authentications on GET /v1/*", es)
	}
	if es[0].Source == "" || strings.Contains(es[0].Source, "127.0.0.1") {
		t.Fatalf("source = %q, want the address's pseudonym", es[0].Source)
	}
	var leaked int
	if err := env.DB.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM audit_entries e WHERE e::text LIKE '%' || $1 || '%'`, canary).Scan(&leaked); err != nil || leaked != 0 {
		t.Fatalf("%d audit entries hold the token (%v)", leaked, err)
	}
	if strings.Contains(env.Logs.String(), canary) {
		t.Fatal("the token reached the logs")
	}
}

// Item 4: forged provider webhooks are refused 401 and audited in
// aggregate too.
func TestForgedWebhooksAreAuditedInAggregate(t *testing.T) {
	be := startBank(t, false)
	for i := 0; i < 30; i++ {
		status, body := be.webhookPost(t, "sandbox", http.Header{}, []byte(`{"webhook_type":"ITEM","webhook_code":"ERROR","item_id":"x","error":{"error_code":"ITEM_LOGIN_REQUIRED"},"environment":"sandbox"}`))
		mustErrorReason(t, status, body, 401, "unauthenticated", "bad_signature")
	}
	es := refusals(t, be.Env)
	if len(es) != 1 || es[0].Kinds[compliance.RefusalWebhook] != 30 || es[0].Routes["POST /webhooks/:provider"] != 30 {
		t.Fatalf("entries = %+v, want one counting 30 refused webhooks", es)
	}
}

// Item 8: erasure and legal holds need a staff token with a recent MFA and a
// short life; anything else is 401 mfa_stale, and changes nothing.
func TestStaleStaffTokensCannotEraseOrHold(t *testing.T) {
	ce := startCompliance(t)
	now := time.Now()
	stale := []struct {
		name  string
		token string
	}{
		{"auth_time 16 minutes ago", jwttest.StaffToken(t, jwttest.WithAuthTime(now.Add(-16*time.Minute)))},
		{"no auth_time", jwttest.StaffToken(t, jwttest.WithoutAuthTime())},
		{"a 91-minute lifetime", jwttest.StaffToken(t, jwttest.WithExpiresIn(91*time.Minute))},
		{"no iat", jwttest.StaffToken(t, jwttest.WithoutIssuedAt())},
		{"auth_time in the future", jwttest.StaffToken(t, jwttest.WithAuthTime(now.Add(10*time.Minute)))},
	}
	routes := []struct{ method, path, body string }{
		{"POST", "/legal-holds", `{"subject_id":"user_mfa","reason":"litigation"}`},
		{"DELETE", "/legal-holds/hold_" + strings.Repeat("a", 32), ""},
		{"POST", "/erasure-requests", `{"subject_id":"user_mfa","reason":"asked"}`},
		{"POST", "/erasure-requests/era_" + strings.Repeat("a", 32) + "/approve", ""},
		{"POST", "/erasure-requests/era_" + strings.Repeat("a", 32) + "/reject", `{"reason":"not ours"}`},
		{"POST", "/erasure-requests/era_" + strings.Repeat("a", 32) + "/cancel", `{"reason":"asked twice"}`},
		{"POST", "/erasure-requests/era_" + strings.Repeat("a", 32) + "/complete", ""},
	}
	for _, tc := range stale {
		for _, r := range routes {
			t.Run(tc.name+": "+r.method+" "+r.path, func(t *testing.T) {
				ct := ""
				if r.body != "" {
					ct = "application/json"
				}
				status, h, body := apitest.Do(t, ce.console, r.method, ce.Internal.URL+"/compliance/v1"+r.path, tc.token, ct, r.body)
				mustErrorReason(t, status, body, 401, "unauthenticated", "mfa_stale")
				if !strings.Contains(h.Get("WWW-Authenticate"), "insufficient_user_authentication") {
					t.Fatalf("WWW-Authenticate = %q, want a step-up challenge", h.Get("WWW-Authenticate"))
				}
			})
		}
	}
	if n := countRows(t, ce.Env, "legal_holds") + countRows(t, ce.Env, "erasure_requests"); n != 0 {
		t.Fatalf("stale tokens left %d holds or erasure requests", n)
	}
	t.Run("a fresh token places a hold and requests an erasure", func(t *testing.T) {
		if _, err := vault.EnsureSubject(context.Background(), ce.DB.Pool, "user_mfa"); err != nil {
			t.Fatal(err)
		}
		fresh := jwttest.StaffToken(t, jwttest.WithAuthTime(now.Add(-14*time.Minute)), jwttest.WithExpiresIn(90*time.Minute))
		if status, body := ce.call(t, "POST", "/legal-holds", fresh, `{"subject_id":"user_mfa","reason":"litigation"}`); status != 201 {
			t.Fatalf("hold = %d %s", status, body)
		}
		if status, body := ce.call(t, "POST", "/erasure-requests", fresh, `{"subject_id":"user_mfa","reason":"asked"}`); status != 201 {
			t.Fatalf("erasure request = %d %s", status, body)
		}
	})
	t.Run("reading needs no fresh MFA", func(t *testing.T) {
		old := jwttest.StaffToken(t, jwttest.WithAuthTime(now.Add(-5*time.Hour)))
		if status, body := ce.call(t, "POST", "/audit/verify", old, ""); status != 200 {
			t.Fatalf("audit verify with an old MFA = %d %s, want 200", status, body)
		}
	})
	if n := sumReasons(refusals(t, ce.Env), "staff authentication too old"); n != len(routes) {
		t.Fatalf("audited %d stale authentications, want %d", n, len(routes))
	}
}

// Every compliance route that changes something needs a fresh MFA, so that a
// new action route cannot be added unguarded: only the audit check (a read
// that takes a body) may do without.
func TestEveryComplianceActionNeedsAFreshStaffMFA(t *testing.T) {
	env := startCompliance(t)
	readsWithABody := map[string]bool{"POST /compliance/v1/audit/verify": true}
	checked := 0
	for _, r := range env.InternalEcho.Routes() {
		switch r.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		default:
			continue // reads, and echo's not-found and method-not-allowed routes
		}
		if !strings.HasPrefix(r.Path, "/compliance/") {
			continue
		}
		checked++
		if got, want := api.FreshMFARoute(r.Method, r.Path), !readsWithABody[r.Method+" "+r.Path]; got != want {
			t.Errorf("%s %s: needs fresh MFA = %v, want %v", r.Method, r.Path, got, want)
		}
	}
	if checked < 8 {
		t.Fatalf("walked %d compliance action routes; the route table changed shape", checked)
	}
}
