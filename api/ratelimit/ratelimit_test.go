package ratelimit_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api/ratelimit"
)

// redisURL is the test Redis (scripts/ensure-services.sh starts it).
const redisURL = "redis://127.0.0.1:6379/0"

// testRedis returns a limiter over the test Redis under a random prefix,
// skipping (failing under CI) when there is no Redis.
func testRedis(t *testing.T) (*ratelimit.Redis, string) {
	t.Helper()
	rdb, err := ratelimit.NewRedisClient(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no Redis at %s (CI is set, so this fails): %v", redisURL, err)
		}
		t.Skipf("no Redis at %s: %v", redisURL, err)
	}
	prefix := "kluis-test:" + randomHex(t) + ":"
	return ratelimit.NewRedis(rdb, prefix), prefix
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// spend calls Allow n times and returns how many were allowed and the last
// result.
func spend(t *testing.T, l ratelimit.Limiter, key string, limit ratelimit.Limit, n int) (int, ratelimit.Result) {
	t.Helper()
	allowed := 0
	var last ratelimit.Result
	for i := 0; i < n; i++ {
		r, err := l.Allow(context.Background(), key, limit)
		if err != nil {
			t.Fatalf("Allow: %v", err)
		}
		if r.Allowed {
			allowed++
		}
		last = r
	}
	return allowed, last
}

func TestMemoryAllowsTheBurstThenRefusesWithAWait(t *testing.T) {
	m := ratelimit.NewMemory(0)
	limit := ratelimit.Limit{Rate: 5, Period: time.Minute, Burst: 5}
	allowed, last := spend(t, m, "a", limit, 8)
	if allowed != 5 {
		t.Fatalf("allowed = %d, want 5", allowed)
	}
	if last.Allowed || last.RetryAfter <= 0 || last.RetryAfter > 12*time.Second {
		t.Fatalf("last = %+v, want refused with a wait of at most one interval (12s)", last)
	}
	if other, _ := spend(t, m, "b", limit, 1); other != 1 {
		t.Fatal("another key shares the first key's count")
	}
}

func TestMemoryKeySetStaysBounded(t *testing.T) {
	m := ratelimit.NewMemory(100)
	limit := ratelimit.Limit{Rate: 1, Period: time.Hour, Burst: 1}
	for i := 0; i < 1000; i++ {
		spend(t, m, fmt.Sprint("k", i), limit, 1)
	}
	if n := m.Len(); n > 100 {
		t.Fatalf("tracked keys = %d, want at most 100", n)
	}
}

func TestZeroLimitAllowsEverything(t *testing.T) {
	if allowed, _ := spend(t, ratelimit.NewMemory(0), "a", ratelimit.Limit{}, 50); allowed != 50 {
		t.Fatalf("allowed = %d, want all 50", allowed)
	}
}

func TestTwoRedisLimitersShareOneLimit(t *testing.T) {
	a, prefix := testRedis(t)
	rdb, err := ratelimit.NewRedisClient(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	b := ratelimit.NewRedis(rdb, prefix)
	limit := ratelimit.Limit{Rate: 6, Period: time.Minute, Burst: 6}
	na, _ := spend(t, a, "k", limit, 4)
	nb, last := spend(t, b, "k", limit, 4)
	if na+nb != 6 {
		t.Fatalf("allowed %d + %d, want 6 in all", na, nb)
	}
	if last.Allowed || last.RetryAfter <= 0 {
		t.Fatalf("last = %+v, want refused with a wait", last)
	}
}

func TestFallbackKeepsLimitingInMemoryWhenRedisIsDown(t *testing.T) {
	// Nothing listens on port 1: every Redis call fails fast.
	rdb, err := ratelimit.NewRedisClient("redis://127.0.0.1:1/0")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	f := ratelimit.NewFallback(ratelimit.NewRedis(rdb, "x:"), ratelimit.NewMemory(0), nil, nil)
	limit := ratelimit.Limit{Rate: 3, Period: time.Minute, Burst: 3}
	allowed, last := spend(t, f, "k", limit, 5)
	if allowed != 3 || last.Allowed {
		t.Fatalf("allowed = %d (last %+v), want 3 and then refusals: never unlimited", allowed, last)
	}
}

func TestRetryAfterSecondsRoundsUp(t *testing.T) {
	for _, tt := range []struct {
		in   time.Duration
		want int
	}{{0, 1}, {time.Millisecond, 1}, {time.Second, 1}, {1001 * time.Millisecond, 2}, {12 * time.Second, 12}} {
		if got := ratelimit.RetryAfterSeconds(tt.in); got != tt.want {
			t.Errorf("RetryAfterSeconds(%s) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// TestMemoryEvictsTheOldestAndKeepsLiveCounts floods a full limiter with new
// keys from many goroutines, round after round, while a set of live keys
// keeps being used. The live keys keep their spent counts, the newest keys
// are kept, and the oldest were evicted (a fresh bucket allows them again).
func TestMemoryEvictsTheOldestAndKeepsLiveCounts(t *testing.T) {
	t.Parallel()
	const (
		capacity = 6400 // 100 a shard
		rounds   = 20
		perRound = 1600 // 25 a shard on average: well under a shard's room
		workers  = 16
	)
	m := ratelimit.NewMemory(capacity)
	limit := ratelimit.Limit{Rate: 1, Period: time.Hour, Burst: 2}
	exhaust := func(key string) {
		if allowed, last := spend(t, m, key, limit, 3); allowed != 2 || last.Allowed {
			t.Errorf("key %s: allowed %d of 3, want 2", key, allowed)
		}
	}
	live := make([]string, 64)
	for i := range live {
		live[i] = fmt.Sprint("live-", i)
		exhaust(live[i])
	}
	touchLive := func() {
		for _, k := range live {
			if r, _ := m.Allow(context.Background(), k, limit); r.Allowed {
				t.Errorf("live key %s was allowed: its count was lost", k)
			}
		}
	}
	key := func(round, i int) string { return fmt.Sprintf("new-%d-%d", round, i) }
	for round := range rounds {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < perRound; i += workers {
					exhaust(key(round, i))
				}
			}()
		}
		wg.Add(1)
		go func() { defer wg.Done(); touchLive() }()
		wg.Wait()
		touchLive()
		if n := m.Len(); n > capacity {
			t.Fatalf("round %d: %d keys tracked, want at most %d", round, n, capacity)
		}
	}
	for i := range perRound {
		if r, _ := m.Allow(context.Background(), key(rounds-1, i), limit); r.Allowed {
			t.Fatalf("key %s of the last round was evicted", key(rounds-1, i))
		}
	}
	for i := range perRound {
		if r, _ := m.Allow(context.Background(), key(0, i), limit); !r.Allowed {
			t.Fatalf("key %s of the first round still has its count: it was not evicted", key(0, i))
		}
	}
}

// BenchmarkMemoryNewKey measures a new key arriving at a full limiter (each
// one evicts): the cost must not grow with the table (docs/BENCHMARKS.md).
func BenchmarkMemoryNewKey(b *testing.B) {
	limit := ratelimit.Limit{Rate: 6000, Period: time.Minute, Burst: 6000}
	for _, size := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprint("keys=", size), func(b *testing.B) {
			m := ratelimit.NewMemory(size)
			for i := range size {
				_, _ = m.Allow(context.Background(), fmt.Sprint("fill-", i), limit)
			}
			keys := make([]string, b.N)
			for i := range keys {
				keys[i] = fmt.Sprint("new-", i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				_, _ = m.Allow(context.Background(), keys[i], limit)
			}
		})
	}
}

// BenchmarkMemoryParallel is the same at 100,000 keys from every core.
func BenchmarkMemoryParallel(b *testing.B) {
	limit := ratelimit.Limit{Rate: 6000, Period: time.Minute, Burst: 6000}
	m := ratelimit.NewMemory(100_000)
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, _ = m.Allow(context.Background(), fmt.Sprint("k-", n.Add(1)), limit)
		}
	})
}

// Both limiters say how much of the limit is left and when it is whole
// again, for the RateLimit header: one less each time, none when refused.
func TestLimitersReportWhatIsLeft(t *testing.T) {
	redis, _ := testRedis(t)
	for name, l := range map[string]ratelimit.Limiter{"memory": ratelimit.NewMemory(0), "redis": redis} {
		t.Run(name, func(t *testing.T) {
			limit := ratelimit.Limit{Rate: 5, Period: time.Hour, Burst: 5}
			key := "left:" + randomHex(t)
			for want := 4; want >= 0; want-- {
				_, r := spend(t, l, key, limit, 1)
				if !r.Allowed || r.Remaining != want || r.Reset <= 0 || r.Reset > limit.Period {
					t.Fatalf("after %d: %+v, want allowed with %d left and a reset within the hour", 5-want, r, want)
				}
			}
			_, r := spend(t, l, key, limit, 1)
			if r.Allowed || r.Remaining != 0 || r.RetryAfter <= 0 || r.Reset <= 0 {
				t.Fatalf("past the limit: %+v, want refused, nothing left, a wait and a reset", r)
			}
		})
	}
}
