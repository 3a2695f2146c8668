package ratelimit

import (
	"container/list"
	"context"
	"hash/maphash"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys bounds the keys a Memory limiter tracks.
const DefaultMaxKeys = 100_000

// maxShards is how many independently locked parts a Memory limiter has
// (fewer when it holds fewer keys): enough that concurrent requests rarely
// wait on one another.
const maxShards = 64

// Memory is a per-process Limiter: one token bucket per key. The key set is
// bounded, and each new key costs O(1) however full it is: keys are spread
// over shards by a hash with a per-process random seed (so a client cannot
// aim its keys at one shard), and each shard keeps its buckets in
// least-recently-used order and, when full, drops the least recently used.
// A bucket idle that long has refilled in all but extreme floods, and then
// holds no state a new bucket would not; keys in use stay at the front and
// keep their counts. It is safe for concurrent use.
//
// It replaced a single map whose eviction scanned every key under one lock
// (1.6 ms a new key at 100,000 keys): docs/BENCHMARKS.md has the figures.
type Memory struct {
	seed   maphash.Seed
	shards []memoryShard
	now    func() time.Time
}

// memoryShard is an LRU of buckets: a map for lookup and a list for order
// (front: most recently used).
type memoryShard struct {
	mu      sync.Mutex
	buckets map[string]*list.Element // of *bucket
	order   list.List
	maxKeys int
}

type bucket struct {
	key   string
	lim   *rate.Limiter
	limit Limit
}

// NewMemory returns a Memory limiter holding at most maxKeys keys
// (DefaultMaxKeys when maxKeys < 1), shared out among its shards.
func NewMemory(maxKeys int) *Memory {
	if maxKeys < 1 {
		maxKeys = DefaultMaxKeys
	}
	n := min(maxShards, maxKeys)
	m := &Memory{seed: maphash.MakeSeed(), shards: make([]memoryShard, n), now: time.Now}
	for i := range m.shards {
		m.shards[i].buckets = make(map[string]*list.Element)
		m.shards[i].maxKeys = maxKeys / n
		if i < maxKeys%n {
			m.shards[i].maxKeys++
		}
	}
	return m
}

// Allow implements Limiter. It never returns an error.
func (m *Memory) Allow(_ context.Context, key string, limit Limit) (Result, error) {
	if limit.IsZero() {
		return Result{Allowed: true}, nil
	}
	s := &m.shards[maphash.String(m.seed, key)%uint64(len(m.shards))]
	s.mu.Lock()
	defer s.mu.Unlock()
	now := m.now()
	b := s.bucket(key, limit)
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return Result{RetryAfter: limit.Period, Reset: limit.Period}, nil
	}
	if wait := r.DelayFrom(now); wait > 0 {
		r.CancelAt(now)
		return b.state(now, Result{RetryAfter: wait}), nil
	}
	return b.state(now, Result{Allowed: true}), nil
}

// state fills in res's Remaining and Reset from the bucket's tokens at now.
// Called with the shard's lock held.
func (b *bucket) state(now time.Time, res Result) Result {
	tokens := b.lim.TokensAt(now)
	res.Remaining = max(int(math.Floor(tokens)), 0)
	if missing := float64(b.lim.Burst()) - tokens; missing > 0 && b.lim.Limit() > 0 {
		res.Reset = time.Duration(missing / float64(b.lim.Limit()) * float64(time.Second))
	}
	return res
}

// bucket returns key's bucket, made most recently used, creating it (and
// evicting the least recently used when the shard is full) if needed. Called
// with s.mu held.
func (s *memoryShard) bucket(key string, limit Limit) *bucket {
	if e, ok := s.buckets[key]; ok {
		s.order.MoveToFront(e)
		b := e.Value.(*bucket)
		if b.limit != limit {
			b.lim, b.limit = newLimiter(limit), limit
		}
		return b
	}
	if len(s.buckets) >= s.maxKeys {
		// The least recently used goes; its list element and bucket are
		// reused for the new key, so a full limiter allocates only the
		// new key's token bucket.
		e := s.order.Back()
		b := e.Value.(*bucket)
		delete(s.buckets, b.key)
		b.key, b.lim, b.limit = key, newLimiter(limit), limit
		s.order.MoveToFront(e)
		s.buckets[key] = e
		return b
	}
	b := newBucket(key, limit)
	s.buckets[key] = s.order.PushFront(b)
	return b
}

func newBucket(key string, limit Limit) *bucket {
	return &bucket{key: key, lim: newLimiter(limit), limit: limit}
}

func newLimiter(l Limit) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(float64(l.Rate)/l.Period.Seconds()), max(l.Burst, 1))
}

// Len returns the number of keys tracked.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.buckets)
		s.mu.Unlock()
	}
	return n
}
