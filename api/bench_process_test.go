package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/loadgen"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/awskms/kmstest"
)

// kluisBinary builds cmd/kluis as `make build` does, once per run, into a
// temporary directory: the bench measures the code it was run on.
func (h *honest) kluisBinary(b *testing.B) string {
	b.Helper()
	if h.bin != "" {
		return h.bin
	}
	dir, err := os.MkdirTemp("", "kluis-bench-bin-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "kluis")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/kluis-dev/kluis/cmd/kluis")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build kluis: %v\n%s", err, out)
	}
	h.bin = bin
	return bin
}

// freeAddr is a loopback address nothing listens on now (the kernel's
// choice, released at once for the process to bind).
func freeAddr(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// kluisProcess is `kluis serve` running in its own process.
type kluisProcess struct {
	cmd      *exec.Cmd
	internal string
	exited   chan error
	stopOnce sync.Once
}

// stop sends SIGTERM (kluis drains and exits) and waits up to 30 s, then
// kills it.
func (p *kluisProcess) stop() {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
}

// startKluisProcess runs `kluis serve` over env's (seeded) database, with
// the KMS test server as its root-key provider, env's test CA for the
// internal listener's mutual TLS (so env.ServiceClient's certificate is let
// in), the test policy, and the bench's raised service and reveal limits.
// Its access log goes nowhere (KLUIS_LOG_LEVEL info, as production logs).
func (h *honest) startKluisProcess(b *testing.B, env *apitest.Env, kms *kmstest.Server) *kluisProcess {
	b.Helper()
	bin := h.kluisBinary(b)
	dir := b.TempDir()
	server, err := env.CA.Server("127.0.0.1", "localhost")
	if err != nil {
		b.Fatal(err)
	}
	certFile, keyFile, err := server.Write(dir, "server")
	if err != nil {
		b.Fatal(err)
	}
	caFile, err := env.CA.WriteCA(dir, "ca")
	if err != nil {
		b.Fatal(err)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(apitest.Policy), 0o600); err != nil {
		b.Fatal(err)
	}
	none := filepath.Join(dir, "none")
	internal := freeAddr(b)
	cmd := exec.Command(bin, "serve")
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + dir,
		"KLUIS_DATABASE_URL=" + env.DBURL,
		"KLUIS_PUBLIC_ADDR=" + freeAddr(b), "KLUIS_INTERNAL_ADDR=" + internal,
		"KLUIS_INTERNAL_TLS_CERT=" + certFile, "KLUIS_INTERNAL_TLS_KEY=" + keyFile, "KLUIS_INTERNAL_CLIENT_CA=" + caFile,
		"KLUIS_SERVICE_POLICY_FILE=" + policyFile, "KLUIS_SPIFFE_TRUST_DOMAIN=kluis.test",
		"KLUIS_JWT_JWKS_FILE=" + jwttest.WriteJWKS(b, jwttest.DefaultKeys()...), "KLUIS_JWT_ISSUER=" + jwttest.Issuer,
		"KLUIS_KEY_PROVIDER=awskms", "KLUIS_AWSKMS_KEY_ID=" + kms.KeyID(),
		"AWS_ENDPOINT_URL_KMS=" + kms.URL, "AWS_REGION=" + kmstest.Region,
		"AWS_ACCESS_KEY_ID=" + kmstest.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + kmstest.SecretAccessKey,
		"AWS_CONFIG_FILE=" + none, "AWS_SHARED_CREDENTIALS_FILE=" + none,
		// As withBenchLimits: the limiter runs, but a 429 is not a reveal.
		"KLUIS_RATE_LIMIT_SERVICE=1000000/s", "KLUIS_RATE_LIMIT_REVEAL=1000000/s",
		"KLUIS_LOG_LEVEL=info",
	}
	errs := &apitest.SyncBuffer{}
	cmd.Stderr = errs
	if err := cmd.Start(); err != nil {
		b.Fatalf("start kluis: %v", err)
	}
	exited := make(chan error, 1)
	p := &kluisProcess{cmd: cmd, internal: "https://" + internal, exited: exited}
	go func() { exited <- cmd.Wait() }()
	b.Cleanup(p.stop)
	client := env.ServiceClient(b, "payments")
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for stop
			b.Fatalf("kluis serve ended: %v\n%s", err, errs.String())
		default:
		}
		resp, err := client.Get(p.internal + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("kluis serve not ready in 60 s: %v\n%s", err, errs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// memory is the process's peak and current resident set (VmHWM, VmRSS).
func (p *kluisProcess) memory() (peak, now string) {
	return procStatus(p.cmd.Process.Pid, "VmHWM:"), procStatus(p.cmd.Process.Pid, "VmRSS:")
}

// procStatus reads one kB field of /proc/<pid>/status in MiB.
func procStatus(pid int, field string) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), field); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
		}
	}
	return "unknown"
}

// ownProcess measures kluis alone: `kluis serve` in its own process over
// the seeded database, driven by the load generator from this process
// (32 clients, the floor measured right after with the same clients), and
// the server process's peak resident memory. It returns the reveal rate.
func (h *honest) ownProcess(b *testing.B, env *apitest.Env, kms *kmstest.Server, client *http.Client,
	floorURL string, refs *refTable) loadgen.Result {
	ctx := context.Background()
	// The in-process runs above run no sealer (apitest does not): chain
	// their backlog here, untimed, so that the process's own sealer chains
	// only its own entries, as it does in steady state.
	sealStart := time.Now()
	sealed, err := audit.NewSealer(env.DB, 0).SealPending(ctx)
	if err != nil {
		b.Fatalf("seal the backlog: %v", err)
	}
	h.printf("audit backlog of the in-process runs sealed before kluis serve starts: %d entries in %s", sealed, time.Since(sealStart).Round(time.Millisecond))
	p := h.startKluisProcess(b, env, kms)
	peak0, _ := p.memory()
	h.load(ctx, b, client, p.internal, refs, honestClients, time.Second)
	before := kms.TotalCalls()
	r := h.load(ctx, b, client, p.internal, refs, honestClients, h.dur)
	calls := kms.TotalCalls() - before
	peak, now := p.memory()
	f := h.load(ctx, b, client, floorURL, refs, honestClients, h.dur)
	h.printf("kluis serve in its own process, %d subjects: %s; KMS calls %d", len(refs.ids), r, calls)
	h.printf("floor right after, %d subjects: %s; reveal/floor %.2f", len(refs.ids), f, r.PerSecond/f.PerSecond)
	h.printf("kluis serve's own resident memory, %d subjects: peak (VmHWM) %s (%s when ready, before any load), now %s",
		len(refs.ids), peak, peak0, now)
	p.stop()
	return r
}

// rootRotation rotates the root key in the KMS test server (a new backing
// key version) and runs what `kluis keys rotate` runs without --new-epoch
// (vault.Store.Rotate as the key-rotation job calls it, no new epoch),
// counting the provider's calls.
func (h *honest) rootRotation(b *testing.B, env *apitest.Env, name string, rotateRoot func(), calls func() int, subjects int) {
	ctx := context.Background()
	rotateRoot()
	before := calls()
	start := time.Now()
	res, err := env.Store.Rotate(ctx, env.DB, vault.RotationOptions{})
	took := time.Since(start)
	if err != nil {
		b.Fatalf("root rotation: %v", err)
	}
	got := calls() - before
	h.printf("root-key rotation (%s, `kluis keys rotate` without --new-epoch) over %d subject keys: %d provider calls (goal <= 10), %s; keyring and system keys rewrapped %d, subject keys re-wrapped %d, new epoch %v",
		name, subjects, got, took.Round(time.Millisecond), res.RootRewrapped, res.Rewrapped, res.NewEpoch)
}

// explain reads, for 500 uniformly chosen refs, reveal's query (as
// vault.Store.Fetch reads it) and the floor's under EXPLAIN (ANALYZE,
// BUFFERS), and prints the shared buffers each touched (hit in Postgres's
// cache, or read from the OS) and the relations' sizes: what differs
// between 10,000 and 1,000,000 subjects.
func (h *honest) explain(b *testing.B, env *apitest.Env, refs *refTable) {
	ctx := context.Background()
	queries := []struct{ name, sql string }{
		{"reveal (vault.Store.Fetch)", `SELECT c.kind, c.subject_id, c.key_version, COALESCE(c.owner_type, ''), COALESCE(c.owner_id, ''), c.created_at,
			s.app_id, s.external_id, c.envelope, c.revoked_at IS NOT NULL,
			k.wrapped, k.root_version, COALESCE(k.keyring_epoch, 0)
		FROM credentials c
		JOIN subjects s ON s.id = c.subject_id
		LEFT JOIN keystore.subject_keys k ON k.subject_id = c.subject_id AND k.version = c.key_version
		WHERE c.ref = $1`},
		{"floor", `SELECT kind, envelope FROM credentials WHERE ref = $1`},
	}
	const n = 500
	for _, q := range queries {
		var hit, read int
		var exec float64
		for i := 0; i < n; i++ {
			var plan []byte
			if err := env.DB.Pool.QueryRow(ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) `+q.sql, refs.random()).Scan(&plan); err != nil {
				b.Fatalf("explain: %v", err)
			}
			var out []struct {
				Plan struct {
					Hit  int `json:"Shared Hit Blocks"`
					Read int `json:"Shared Read Blocks"`
				} `json:"Plan"`
				Exec float64 `json:"Execution Time"`
			}
			if err := json.Unmarshal(plan, &out); err != nil || len(out) != 1 {
				b.Fatalf("explain: %v", err)
			}
			hit += out[0].Plan.Hit
			read += out[0].Plan.Read
			exec += out[0].Exec
		}
		h.printf("EXPLAIN (ANALYZE, BUFFERS), %s, %d subjects, mean of %d random refs: %.2f buffers hit, %.2f read, %.3f ms",
			q.name, len(refs.ids), n, float64(hit)/n, float64(read)/n, exec/n)
	}
	var sizes string
	if err := env.DB.Pool.QueryRow(ctx, `SELECT string_agg(format('%s %s (indexes %s)', c, pg_size_pretty(pg_table_size(c)),
		pg_size_pretty(pg_indexes_size(c))), '; ')
		FROM unnest(ARRAY['credentials', 'subjects', 'keystore.subject_keys']::regclass[]) AS c`).Scan(&sizes); err != nil {
		b.Fatalf("sizes: %v", err)
	}
	var buffers string
	_ = env.DB.Pool.QueryRow(ctx, `SHOW shared_buffers`).Scan(&buffers)
	h.printf("relation sizes at %d subjects: %s; shared_buffers %s", len(refs.ids), sizes, buffers)
}

// cpuProfile, with KLUIS_BENCH_PROFILE set to a directory, writes a CPU
// profile of this process (kluis in process, its load generator, and the
// Postgres client) to <dir>/<name>.cpu until the returned func is called:
// the 10,000- and 1,000,000-subject reveal loads are profiled alike, so
// that `go tool pprof -top -diff_base` shows what differs between them.
func (h *honest) cpuProfile(name string) func() {
	dir := os.Getenv("KLUIS_BENCH_PROFILE")
	if dir == "" {
		return func() {}
	}
	path := filepath.Join(dir, name+".cpu")
	f, err := os.Create(path)
	if err != nil {
		h.printf("CPU profile %s: %v", path, err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		h.printf("CPU profile %s: %v", path, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		h.printf("CPU profile of the %s load: %s", name, path)
	}
}
