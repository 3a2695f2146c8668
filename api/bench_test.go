package api_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/vault/awskms/kmstest"
)

// The reveal benchmarks measure POST /internal/v1/credentials/{ref}/reveal
// through the whole stack (mutual TLS, policy, Postgres, the key cache, the
// audit entry committed before the answer) with a KMS that answers at once
// and one that takes 25 ms per call, and report KMS calls per 1,000 reveals.
// Their floor is the same HTTPS round trip, with the same client
// certificate and the same answer size, to a handler that does nothing.
//
//	go test -run '^$' -bench 'Reveal' -benchtime 3000x ./api/

// benchClients × GOMAXPROCS clients reveal at once, as a busy service's
// connection pool would.
const benchClients = 16

func BenchmarkRevealKMS0ms(b *testing.B)  { benchmarkReveal(b, 0) }
func BenchmarkRevealKMS25ms(b *testing.B) { benchmarkReveal(b, 25*time.Millisecond) }

func benchmarkReveal(b *testing.B, latency time.Duration) {
	kms := kmstest.NewServer(b)
	kms.SetLatency(latency)
	env := apitest.StartWith(b, kmstest.Provider(b, kms), withGroupCommit, withBenchLimits)
	const subjects = 50
	refs := make([]string, 0, subjects)
	for i := 0; i < subjects; i++ {
		refs = append(refs, sealFor(b, env, fmt.Sprintf("user_bench_%d", i), banklink.KindAccessToken,
			fmt.Sprintf(`{"access_token":"access-sandbox-%08d","provider":"plaid"}`, i)))
	}
	client := env.ServiceClient(b, "payments")
	// Steady state: a cold cache, then one reveal per subject to warm it.
	env.Ring.Purge()
	for _, ref := range refs {
		if status := post(b, client, revealURL(env, ref), `{"purpose":"payment_initiation"}`); status != 200 {
			b.Fatalf("warm-up reveal = %d", status)
		}
	}
	before := kmsCalls(kms)
	b.SetParallelism(benchClients)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			ref := refs[i%len(refs)]
			i++
			status := post(b, client, revealURL(env, ref), `{"purpose":"payment_initiation"}`)
			if status != 200 {
				b.Errorf("reveal = %d", status)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(kmsCalls(kms)-before)*1000/float64(b.N), "kms-calls/1000-reveals")
}

func kmsCalls(kms *kmstest.Server) int {
	n := 0
	for _, op := range []string{"GenerateDataKey", "Decrypt", "ReEncrypt", "DescribeKey"} {
		n += kms.Calls(op)
	}
	return n
}

func post(b *testing.B, c *http.Client, url, body string) int {
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		b.Error(err)
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// BenchmarkRevealFloor is the floor of the reveal benchmarks: the same
// mutual-TLS round trip and answer size to a handler that does nothing.
func BenchmarkRevealFloor(b *testing.B) {
	env := apitest.Start(b)
	answer := []byte(`{"ref":"cred_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","kind":"bank_access_token","secret":{"access_token":"access-sandbox-00000000","provider":"plaid"}}`)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}))
	srv.TLS = env.Internal.TLS.Clone()
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	client := env.ServiceClient(b, "payments")
	b.SetParallelism(benchClients)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if status := post(b, client, srv.URL+"/internal/v1/credentials/x/reveal", `{"purpose":"payment_initiation"}`); status != 200 {
				b.Errorf("floor = %d", status)
				return
			}
		}
	})
}
