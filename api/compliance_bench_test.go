package api_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/config"
)

// BenchmarkPurgeWhileServing purges 1,000,000 expired rows of one class
// (provider webhook events) while 8 clients reveal credentials through the
// internal listener, and reports the purge's time and the reveals' p99
// latency during the purge against the same load idle. Run it once:
//
//	go test -run '^$' -bench PurgeWhileServing -benchtime 1x ./api/
func BenchmarkPurgeWhileServing(b *testing.B) {
	const rows, clients = 1_000_000, 8
	env := apitest.Start(b)
	ctx := context.Background()
	refs := make([]string, 20)
	for i := range refs {
		refs[i] = sealFor(b, env, fmt.Sprintf("user_purge_%d", i), banklink.KindAccessToken, `{"access_token":"access-sandbox-x","provider":"sandbox"}`)
	}
	if _, err := env.DB.Pool.Exec(ctx, `
		INSERT INTO provider_webhook_events (provider, event_id, kind, outcome, received_at)
		SELECT 'sandbox', 'evt-' || g, 'unknown', 'ignored', now() - interval '400 days'
		FROM generate_series(1, $1) g`, rows); err != nil {
		b.Fatal(err)
	}
	if _, err := env.DB.Pool.Exec(ctx, `VACUUM ANALYZE provider_webhook_events`); err != nil {
		b.Fatal(err)
	}
	client := env.ServiceClient(b, "payments")
	// load reveals until stop closes and returns every latency.
	load := func(stop <-chan struct{}) []time.Duration {
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func(c int) {
				defer wg.Done()
				for i := c; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					start := time.Now()
					if status := post(b, client, revealURL(env, refs[i%len(refs)]), `{"purpose":"payment_initiation"}`); status != 200 {
						b.Errorf("reveal = %d", status)
						return
					}
					d := time.Since(start)
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			}(c)
		}
		<-stop
		wg.Wait()
		return lat
	}
	sealer := audit.NewSealer(env.DB, 0)
	sealCtx, stopSealer := context.WithCancel(ctx)
	defer stopSealer()
	go sealer.Run(sealCtx, time.Second, nil)

	idleStop := make(chan struct{})
	time.AfterFunc(5*time.Second, func() { close(idleStop) })
	idle := load(idleStop)

	b.ResetTimer()
	purgeStop := make(chan struct{})
	var during []time.Duration
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); during = load(purgeStop) }()
	classes, err := config.RetentionRegistry()
	if err != nil {
		b.Fatal(err)
	}
	purger := compliance.NewPurger(env.DB, env.Deps.Auditor, nil, nil, classes)
	start := time.Now()
	// The production defaults (KLUIS_RETENTION_BATCH, KLUIS_RETENTION_BATCH_PAUSE).
	rep, err := purger.Purge(ctx, compliance.PurgeOptions{Batch: compliance.DefaultPurgeBatch, Pause: compliance.DefaultPurgePause})
	took := time.Since(start)
	close(purgeStop)
	wg.Wait()
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	for _, cr := range rep.Classes {
		if cr.Class == "provider_webhook_events" && cr.Deleted != rows {
			b.Fatalf("purged %d rows, want %d", cr.Deleted, rows)
		}
	}
	b.ReportMetric(took.Seconds(), "purge-s")
	b.ReportMetric(float64(rows)/took.Seconds(), "rows/s")
	b.ReportMetric(ms(p99(idle)), "idle-p99-ms")
	b.ReportMetric(ms(p99(during)), "purge-p99-ms")
	b.ReportMetric(float64(len(idle))/5, "idle-reveals/s")
	b.ReportMetric(float64(len(during))/took.Seconds(), "purge-reveals/s")
}

func p99(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)*99/100]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
