package ratelimit

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys bounds the keys a Memory limiter tracks.
const DefaultMaxKeys = 100_000

// Memory is a per-process Limiter: one token bucket per key. The key set is
// bounded: buckets idle long enough to have refilled are dropped first (they
// hold no state a new bucket would not), and when the set is still full the
// longest-idle bucket goes. It is safe for concurrent use.
type Memory struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	maxKeys int
	now     func() time.Time
}

type bucket struct {
	lim   *rate.Limiter
	limit Limit
	last  time.Time
}

// NewMemory returns a Memory limiter holding at most maxKeys keys
// (DefaultMaxKeys when maxKeys < 1).
func NewMemory(maxKeys int) *Memory {
	if maxKeys < 1 {
		maxKeys = DefaultMaxKeys
	}
	return &Memory{buckets: make(map[string]*bucket), maxKeys: maxKeys, now: time.Now}
}

// Allow implements Limiter. It never returns an error.
func (m *Memory) Allow(_ context.Context, key string, limit Limit) (Result, error) {
	if limit.IsZero() {
		return Result{Allowed: true}, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	b := m.buckets[key]
	if b == nil || b.limit != limit {
		if b == nil && len(m.buckets) >= m.maxKeys {
			m.evict(now)
		}
		b = &bucket{lim: rate.NewLimiter(rate.Limit(float64(limit.Rate)/limit.Period.Seconds()), max(limit.Burst, 1)), limit: limit}
		m.buckets[key] = b
	}
	b.last = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return Result{RetryAfter: limit.Period}, nil
	}
	if wait := r.DelayFrom(now); wait > 0 {
		r.CancelAt(now)
		return Result{RetryAfter: wait}, nil
	}
	return Result{Allowed: true}, nil
}

// Len returns the number of keys tracked.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.buckets)
}

// evict makes room for one key: every refilled bucket goes, or failing
// that the longest idle one. Called with m.mu held; O(keys), and only when
// the set is full.
func (m *Memory) evict(now time.Time) {
	var oldestKey string
	var oldest time.Time
	for k, b := range m.buckets {
		if now.Sub(b.last) >= refill(b.limit) {
			delete(m.buckets, k)
			continue
		}
		if oldestKey == "" || b.last.Before(oldest) {
			oldestKey, oldest = k, b.last
		}
	}
	if len(m.buckets) >= m.maxKeys {
		delete(m.buckets, oldestKey)
	}
}

// refill is how long an idle bucket takes to be full again.
func refill(l Limit) time.Duration {
	return time.Duration(int64(l.Period) * int64(max(l.Burst, 1)) / int64(l.Rate))
}
