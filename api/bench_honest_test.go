package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/ratelimit"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/loadgen"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/awskms/kmstest"
	vaultreveal "github.com/kluis-dev/kluis/vault/reveal"
	"github.com/kluis-dev/kluis/vault/transit"
	"github.com/kluis-dev/kluis/vault/transit/transittest"
)

// BenchmarkRevealHonest is docs/BENCHMARKS.md's run (`make bench`): reveal
// beside its floor measured in the same run, at 10,000 subjects (and, with
// KLUIS_BENCH_1M=1, at 1,000,000) with uniformly spread access; provider
// calls per 1,000 reveals and per new subject through the KMS and Transit
// test servers at 0 and 25 ms; a new keyring epoch over every subject key
// while the API serves (its time, provider calls and the API's p99 beside
// idle); a root-key rotation (what `kluis keys rotate` runs without
// --new-epoch) and its provider calls, apart from the epoch's; `kluis
// serve` built and run in its own process over the same seeded database,
// driven from here, with that process's peak resident memory; and the
// shared buffers reveal's read and the floor's touch (EXPLAIN ANALYZE,
// BUFFERS) at each size. It prints one line per figure and reports the main
// ratios as metrics. It asserts nothing about time, and `go test` without
// -bench never runs it.
//
// The floor is a server doing reveal's I/O and nothing else: the same
// mutual-TLS round trip with the same client certificate, one indexed read
// of the credential's row and one committed insert per request, on the same
// database through a pool of the same size, answering the same size.
//
//	KLUIS_BENCH_SECONDS=10 go test -run '^$' -bench RevealHonest -benchtime 1x -timeout 2h ./api/
func BenchmarkRevealHonest(b *testing.B) {
	for i := 0; i < b.N; i++ {
		h := newHonest(b)
		h.kms(b)
		h.transit(b)
		h.report(b)
	}
}

// honestClients is the measurement: 32 clients over mutual TLS.
const honestClients = 32

type honest struct {
	dur   time.Duration
	out   io.Writer
	bin   string // cmd/kluis built for the own-process runs
	mu    sync.Mutex
	lines []string
}

func newHonest(b *testing.B) *honest {
	dur := 10 * time.Second
	if s, err := strconv.Atoi(os.Getenv("KLUIS_BENCH_SECONDS")); err == nil && s > 0 {
		dur = time.Duration(s) * time.Second
	}
	return &honest{dur: dur, out: os.Stdout}
}

func (h *honest) printf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	h.mu.Lock()
	h.lines = append(h.lines, line)
	h.mu.Unlock()
	fmt.Fprintln(h.out, "honest: "+line)
}

// withGroupCommit wires reveal as `kluis serve` does: its audit entries
// through audit.Group.
func withGroupCommit(d *api.Deps) {
	d.Reveal = vaultreveal.New(vaultreveal.Options{Records: d.Vault, Policy: d.Policy,
		Audit: audit.NewGroup(d.Auditor, audit.GroupOptions{}), Logger: d.Logger})
}

// withBenchLimits raises the per-service and reveal limits (2,000 reveals a
// second by default) past what this machine can serve: the limiter still
// runs and is measured, but a 429 is not a reveal.
func withBenchLimits(d *api.Deps) {
	l := api.DefaultRateLimits()
	l.Service = ratelimit.Limit{Rate: 1000000, Period: time.Second, Burst: 1000000}
	l.Operations[api.OpReveal] = ratelimit.Limit{Rate: 1000000, Period: time.Second, Burst: 1000000}
	d.RateLimits = &l
}

// refTable holds seeded refs compactly (32 bytes each) so that a million of
// them do not weigh on the measured memory.
type refTable struct{ ids [][32]byte }

func (t *refTable) add(ref string) {
	var id [32]byte
	copy(id[:], ref[len(kluis.PrefixCredential):])
	t.ids = append(t.ids, id)
}

func (t *refTable) ref(i int) string { return kluis.PrefixCredential + string(t.ids[i][:]) }

// random is a uniformly chosen ref.
func (t *refTable) random() string { return t.ref(rand.IntN(len(t.ids))) }

// seed makes n subjects, each with one access token, straight into the
// database through the vault's own Seed (no provider call, no HTTP).
func seed(b *testing.B, env *apitest.Env, refs *refTable, n int) time.Duration {
	b.Helper()
	start := time.Now()
	const batch = 20000
	secret := []byte(`{"access_token":"access-sandbox-00000000","provider":"plaid"}`)
	for done := 0; done < n; done += batch {
		recs := make([]vault.SeedRecord, min(batch, n-done))
		for i := range recs {
			recs[i] = vault.SeedRecord{ExternalID: kluis.NewID("bench_"), Kind: banklink.KindAccessToken,
				Owner: vault.ItemOwner(kluis.NewID(kluis.PrefixItem)), Secret: secret}
		}
		seeded, err := env.Store.Seed(context.Background(), recs)
		if err != nil {
			b.Fatalf("seed: %v", err)
		}
		for _, s := range seeded {
			refs.add(s.Ref)
		}
	}
	if _, err := env.DB.Pool.Exec(context.Background(), `ANALYZE credentials; ANALYZE subjects; ANALYZE keystore.subject_keys`); err != nil {
		b.Fatalf("analyze: %v", err)
	}
	return time.Since(start)
}

// startFloor starts the floor server on env's database (see the
// benchmark's comment), with env's internal TLS settings.
func startFloor(b *testing.B, env *apitest.Env) *httptest.Server {
	b.Helper()
	ctx := context.Background()
	owner := pgtest.OpenOwner(b, env.DBURL)
	if _, err := owner.Pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_floor_log (
		id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, service text NOT NULL, ref text NOT NULL,
		purpose text NOT NULL, at timestamptz NOT NULL DEFAULT now())`); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Purpose string `json:"purpose"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		ref := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/internal/v1/credentials/"), "/reveal")
		var kind string
		var envelope []byte
		if err := owner.Pool.QueryRow(r.Context(), `SELECT kind, envelope FROM credentials WHERE ref = $1`, ref).Scan(&kind, &envelope); err != nil {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		if _, err := owner.Pool.Exec(r.Context(), `INSERT INTO bench_floor_log (service, ref, purpose) VALUES ($1, $2, $3)`,
			r.TLS.PeerCertificates[0].Subject.CommonName, ref, req.Purpose); err != nil {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprintf(w, `{"ref":%q,"kind":%q,"owner":{"type":"item","id":"itm_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},"secret":{"access_token":"access-sandbox-00000000","provider":"plaid"}}`, ref, kind)
	}))
	srv.TLS = env.Internal.TLS.Clone()
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	b.Cleanup(srv.Close)
	return srv
}

// load runs clients callers against base (kluis's or the floor's internal
// URL) over refs for the run's duration (or until ctx ends).
func (h *honest) load(ctx context.Context, b *testing.B, client *http.Client, base string, refs *refTable, clients int, dur time.Duration) loadgen.Result {
	b.Helper()
	res := loadgen.Run(ctx, loadgen.Config{
		Client: client, Method: http.MethodPost, Clients: clients, Max: 1 << 30, For: dur,
		URLFor: func(int) string { return base + "/internal/v1/credentials/" + refs.random() + "/reveal" },
		Header: http.Header{"Content-Type": {"application/json"}},
		Body:   []byte(`{"purpose":"payment_initiation"}`),
	})
	if res.Failures > 0 {
		// Errorf, not Fatalf: the rotation's load runs on its own goroutine.
		b.Errorf("%d of %d requests failed: %v", res.Failures, res.Requests, res.Statuses)
		h.printf("FAILED requests: %d of %d, statuses %v", res.Failures, res.Requests, res.Statuses)
	}
	return res
}

// kms is the main run, through the KMS test server: floor, reveal at 10k
// (and 1M), provider calls, 25 ms, rotation, memory.
func (h *honest) kms(b *testing.B) {
	ctx := context.Background()
	kms := kmstest.NewServer(b)
	env := apitest.StartWith(b, kmstest.Provider(b, kms), withGroupCommit, withBenchLimits)
	refs := &refTable{}
	took := seed(b, env, refs, 10000)
	h.printf("seeded 10,000 subjects in %s", took.Round(time.Millisecond))
	floor := startFloor(b, env)
	client := env.ServiceClient(b, "payments")
	warm := func(base string) { h.load(ctx, b, client, base, refs, honestClients, time.Second) }
	warm(floor.URL)
	warm(env.Internal.URL)

	f1 := h.load(ctx, b, client, floor.URL, refs, honestClients, h.dur)
	before := kms.TotalCalls()
	done := h.cpuProfile("reveal-10k")
	r10k := h.load(ctx, b, client, env.Internal.URL, refs, honestClients, h.dur)
	done()
	calls := kms.TotalCalls() - before
	f2 := h.load(ctx, b, client, floor.URL, refs, honestClients, h.dur)
	floorRate := (f1.PerSecond + f2.PerSecond) / 2
	h.printf("floor (before): %s", f1)
	h.printf("reveal, 10,000 subjects, KMS 0 ms: %s", r10k)
	h.printf("floor (after): %s", f2)
	h.printf("reveal/floor at 10,000 subjects: %.2f (goal >= 0.7)", r10k.PerSecond/floorRate)
	h.printf("KMS calls per 1,000 reveals at 10,000 subjects: %.2f (%d calls, %d reveals)", perThousand(calls, r10k.Requests), calls, r10k.Requests)
	b.ReportMetric(r10k.PerSecond/floorRate, "reveal/floor@10k")
	h.newSubjects(b, env, "KMS", kms.TotalCalls)

	ratio := h.latencyRatio(b, "KMS", kms.SetLatency, kms.TotalCalls, client, env.Internal.URL, refs)
	b.ReportMetric(ratio, "kms25ms/0ms")

	h.explain(b, env, refs)
	own10k := h.ownProcess(b, env, kms, client, floor.URL, refs)

	h.rotate(b, env, client, refs, kms.TotalCalls)
	h.rootRotation(b, env, "KMS", func() { kms.Rotate(kms.KeyID()) }, kms.TotalCalls, len(refs.ids))

	if os.Getenv("KLUIS_BENCH_1M") == "1" {
		took := seed(b, env, refs, 1000000-len(refs.ids))
		h.printf("seeded up to 1,000,000 subjects in %s", took.Round(time.Second))
		warm(env.Internal.URL)
		f3 := h.load(ctx, b, client, floor.URL, refs, honestClients, h.dur)
		before := kms.TotalCalls()
		done := h.cpuProfile("reveal-1m")
		r1m := h.load(ctx, b, client, env.Internal.URL, refs, honestClients, h.dur)
		done()
		calls := kms.TotalCalls() - before
		h.printf("floor at 1,000,000: %s", f3)
		h.printf("reveal, 1,000,000 subjects, KMS 0 ms: %s", r1m)
		h.printf("reveal at 1,000,000 / at 10,000: %.2f (goal >= 0.9); reveal/floor at 1,000,000: %.2f", r1m.PerSecond/r10k.PerSecond, r1m.PerSecond/f3.PerSecond)
		h.printf("KMS calls per 1,000 reveals at 1,000,000 subjects: %.2f (goal <= 1)", perThousand(calls, r1m.Requests))
		h.printf("floor at 1,000,000 / at 10,000: %.2f; kluis's 1m/10k against the floor's: %.2f", f3.PerSecond/floorRate, (r1m.PerSecond/r10k.PerSecond)/(f3.PerSecond/floorRate))
		b.ReportMetric(r1m.PerSecond/r10k.PerSecond, "1m/10k")
		h.explain(b, env, refs)
		own1m := h.ownProcess(b, env, kms, client, floor.URL, refs)
		h.printf("kluis serve in its own process, 1,000,000 / 10,000 subjects: %.2f (goal >= 0.9)", own1m.PerSecond/own10k.PerSecond)
		h.rotate(b, env, client, refs, kms.TotalCalls)
		h.rootRotation(b, env, "KMS", func() { kms.Rotate(kms.KeyID()) }, kms.TotalCalls, len(refs.ids))
	}
	h.printf("peak resident memory of the bench process (kluis, the floor, the KMS test server, the load generator and the seeded refs): %s", peakRSS())
}

// transit runs the provider figures through the Transit test server.
func (h *honest) transit(b *testing.B) {
	ctx := context.Background()
	srv := transittest.NewServer(b)
	p, err := transit.New(srv.Mount, transittest.DefaultKey, transit.WithAddress(srv.URL), transit.WithToken(transittest.DefaultToken))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	env := apitest.StartWith(b, p, withGroupCommit, withBenchLimits)
	refs := &refTable{}
	seed(b, env, refs, 10000)
	client := env.ServiceClient(b, "payments")
	h.load(ctx, b, client, env.Internal.URL, refs, honestClients, time.Second)
	ratio := h.latencyRatio(b, "Transit", srv.SetLatency, srv.TotalCalls, client, env.Internal.URL, refs)
	b.ReportMetric(ratio, "transit25ms/0ms")
	h.newSubjects(b, env, "Transit", srv.TotalCalls)
	h.rootRotation(b, env, "Transit", func() { srv.Rotate(transittest.DefaultKey) }, srv.TotalCalls, len(refs.ids))
}

// latencyRatio compares reveals with 25 ms of provider latency against
// none, in alternating slices of a quarter of the run's duration each (four
// of each), so that the shared machine's drift falls on both alike. It
// prints both totals and the provider calls per 1,000 reveals of each.
func (h *honest) latencyRatio(b *testing.B, name string, setLatency func(time.Duration), calls func() int,
	client *http.Client, base string, refs *refTable) float64 {
	ctx := context.Background()
	type total struct {
		reveals, calls int
		took           time.Duration
	}
	var at [2]total
	latencies := [2]time.Duration{0, 25 * time.Millisecond}
	for round := 0; round < 8; round++ {
		i := round % 2
		setLatency(latencies[i])
		before := calls()
		r := h.load(ctx, b, client, base, refs, honestClients, h.dur/4)
		at[i].reveals += r.Requests
		at[i].calls += calls() - before
		at[i].took += r.Elapsed
	}
	setLatency(0)
	rate := func(t total) float64 { return float64(t.reveals) / t.took.Seconds() }
	for i, t := range at {
		h.printf("reveal, %d subjects, %s %s (alternating slices): %d reveals in %s: %.0f/s; %s calls per 1,000 reveals: %.2f",
			len(refs.ids), name, latencies[i], t.reveals, t.took.Round(time.Millisecond), rate(t), name, perThousand(t.calls, t.reveals))
	}
	ratio := rate(at[1]) / rate(at[0])
	h.printf("reveal at %s 25 ms / 0 ms: %.2f (goal >= 0.9)", name, ratio)
	return ratio
}

// newSubjects seals one credential for each of 200 new subjects as the
// API does (a subject, its first key, the sealed record, one transaction
// each) and counts the provider's calls.
func (h *honest) newSubjects(b *testing.B, env *apitest.Env, name string, calls func() int) {
	ctx := context.Background()
	const n = 200
	before := calls()
	for i := 0; i < n; i++ {
		err := env.DB.InTx(ctx, func(tx pgx.Tx) error {
			sub, err := vault.EnsureSubject(ctx, tx, kluis.NewID("new_"))
			if err != nil {
				return err
			}
			_, err = env.Store.Seal(ctx, tx, vault.ItemOwner(kluis.NewID(kluis.PrefixItem)), sub, banklink.KindAccessToken,
				[]byte(`{"access_token":"access-sandbox-new","provider":"plaid"}`), "")
			return err
		})
		if err != nil {
			b.Fatalf("new subject: %v", err)
		}
	}
	got := calls() - before
	h.printf("%s calls per new subject: %.3f (%d calls for %d new subjects; goal: none beyond one per keyring epoch)", name, float64(got)/n, got, n)
}

// rotate starts a new keyring epoch over every subject key while 4 clients
// reveal, beside their p99 when idle.
func (h *honest) rotate(b *testing.B, env *apitest.Env, client *http.Client, refs *refTable, calls func() int) {
	ctx := context.Background()
	const clients = 4
	idle := h.load(ctx, b, client, env.Internal.URL, refs, clients, h.dur)
	lctx, stop := context.WithCancel(ctx)
	var during loadgen.Result
	done := make(chan struct{})
	go func() {
		defer close(done)
		during = h.load(lctx, b, client, env.Internal.URL, refs, clients, 24*time.Hour)
	}()
	before := calls()
	start := time.Now()
	res, err := env.Store.Rotate(ctx, env.DB, vault.RotationOptions{NewEpoch: true})
	took := time.Since(start)
	stop()
	<-done
	if err != nil {
		b.Fatalf("rotate: %v", err)
	}
	h.printf("new keyring epoch over %d subject keys: %s, %d provider calls (root rewraps %d), %+v", len(refs.ids), took.Round(time.Millisecond), calls()-before, res.RootRewrapped, res.Step)
	h.printf("API p99 with %d clients: idle %s, during the rotation %s (%.2fx; goal <= 2x); rates %.0f/s and %.0f/s",
		clients, idle.P99.Round(time.Microsecond), during.P99.Round(time.Microsecond), float64(during.P99)/float64(idle.P99), idle.PerSecond, during.PerSecond)
}

func perThousand(calls, reveals int) float64 {
	if reveals == 0 {
		return 0
	}
	return float64(calls) * 1000 / float64(reveals)
}

// peakRSS is the process's peak resident set (VmHWM).
func peakRSS() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return fmt.Sprintf("%d MiB", kb/1024)
		}
	}
	return "unknown"
}

func (h *honest) report(b *testing.B) {
	b.Logf("machine: %d CPUs (GOMAXPROCS %d), %s", runtime.NumCPU(), runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.RFC3339))
}
