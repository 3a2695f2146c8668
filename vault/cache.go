package vault

import (
	"bytes"
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/kluis-dev/kluis"
)

// Cache defaults (CacheOptions).
const (
	DefaultCacheMaxAge  = 5 * time.Minute
	DefaultCacheMaxUses = 10_000
	DefaultCacheMaxKeys = 10_000
)

// CacheOptions bounds how long, how often and how many unwrapped subject keys
// wrapped by the root key (from before the key hierarchy) stay in memory,
// and how long keyring keys are used unconfirmed. Zero values take the defaults.
type CacheOptions struct {
	// MaxAge is how long an unwrapped key stays cached after its unwrap.
	MaxAge time.Duration
	// MaxUses is how many seals and opens one unwrap serves.
	MaxUses int
	// MaxKeys is how many keys are cached at once; the oldest goes first.
	MaxKeys int
	// KeyringRecheck is how long an unwrapped keyring key is used without
	// the provider confirming it (KLUIS_KEYRING_RECHECK; keyring.go).
	KeyringRecheck time.Duration
	// Clock tells the time; tests inject their own so that ages can be tested
	// without sleeping.
	Clock kluis.Clock
}

func (o CacheOptions) withDefaults() CacheOptions {
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultCacheMaxAge
	}
	if o.MaxUses <= 0 {
		o.MaxUses = DefaultCacheMaxUses
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = DefaultCacheMaxKeys
	}
	if o.KeyringRecheck <= 0 {
		o.KeyringRecheck = DefaultKeyringRecheck
	}
	if o.Clock == nil {
		o.Clock = kluis.SystemClock{}
	}
	return o
}

// CacheStats counts what the cache did since it was made, for metrics.
type CacheStats struct {
	Hits      uint64 // uses served from the cache
	Misses    uint64 // lookups that needed an unwrap (shared unwraps count once)
	Loads     uint64 // unwraps that succeeded
	Evictions uint64 // keys removed and zeroed, for any reason
	Cached    int    // keys cached now
}

// cacheKey names a subject key version.
type cacheKey struct {
	subject string
	version uint32
}

// cacheEntry is one unwrapped key. wrapped is the stored wrapped key it came
// from: a lookup whose row holds other wrapped bytes (the key was destroyed and
// made again, a transaction that created it rolled back, or it was rewrapped)
// is a miss, so the cache can never serve a key the key store no longer has.
type cacheEntry struct {
	id       cacheKey
	wrapped  []byte
	key      []byte
	loadedAt time.Time
	uses     int
	elem     *list.Element
}

// flightKey identifies one unwrap in progress.
type flightKey struct {
	cacheKey
	wrapped string
}

// flight is one unwrap in progress, shared by every concurrent miss for the
// same stored key. waiters counts the goroutines that still have to take
// their copy; the last one zeroes key.
type flight struct {
	done    chan struct{}
	key     []byte
	err     error
	waiters int
}

// keyCache holds unwrapped subject keys, bounded by age, uses and count.
// Every key handed out is a copy that the caller zeroes; evicted keys are
// zeroed. Concurrent misses for one key make one load.
type keyCache struct {
	opts CacheOptions

	mu      sync.Mutex
	entries map[cacheKey]*cacheEntry
	order   *list.List // of *cacheEntry, oldest load at the back
	flights map[flightKey]*flight
	// epoch changes whenever keys are destroyed; a load that began in an
	// older epoch is handed to its callers but not cached, so a key being
	// shredded cannot slip back into the cache from a load already running.
	epoch uint64
	stats CacheStats
}

func newKeyCache(opts CacheOptions) *keyCache {
	return &keyCache{
		opts:    opts.withDefaults(),
		entries: make(map[cacheKey]*cacheEntry),
		order:   list.New(),
		flights: make(map[flightKey]*flight),
	}
}

// flightTimeout bounds one provider call made on behalf of every waiter for
// a key; the providers' own call timeouts are shorter.
const flightTimeout = 30 * time.Second

// loadFunc unwraps a key; it returns a fresh slice the cache then owns.
type loadFunc func(ctx context.Context) ([]byte, error)

// get returns a copy of the key id stored as wrapped, from the cache or
// through load. The caller must zero the copy when done.
func (c *keyCache) get(ctx context.Context, id cacheKey, wrapped []byte, load loadFunc) ([]byte, error) {
	c.mu.Lock()
	c.expireLocked()
	if e := c.entries[id]; e != nil {
		if bytes.Equal(e.wrapped, wrapped) {
			out := c.useLocked(e)
			c.mu.Unlock()
			return out, nil
		}
		c.removeLocked(e)
	}
	fk := flightKey{cacheKey: id, wrapped: string(wrapped)}
	f, running := c.flights[fk]
	if !running {
		f = &flight{done: make(chan struct{})}
		c.flights[fk] = f
		c.stats.Misses++
	}
	f.waiters++
	epoch := c.epoch
	c.mu.Unlock()

	if !running {
		// The load belongs to every waiter, not to the first: it runs on
		// its own, detached from the first caller's cancellation (a client
		// that hangs up must not fail the others) but bounded in time, and
		// each waiter still leaves at its own deadline.
		loadCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flightTimeout)
		go func() {
			defer cancel()
			c.runFlight(loadCtx, fk, f, epoch, wrapped, load)
		}()
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		c.leave(f, false)
		return nil, ctx.Err()
	}
	return c.leave(f, true), f.err
}

// useLocked counts one use of e and returns a copy of its key, evicting e
// once it has served its last use.
func (c *keyCache) useLocked(e *cacheEntry) []byte {
	e.uses++
	c.stats.Hits++
	out := bytes.Clone(e.key)
	if e.uses >= c.opts.MaxUses {
		c.removeLocked(e)
	}
	return out
}

// runFlight loads the key, caches it unless the bounds or a destruction say
// otherwise, and releases the waiters. The loaded key is zeroed by whoever
// is last with it: the last waiter to take its copy (leave), or this
// function when every waiter has already given up, so that an unwrap nobody
// waits for any more leaves no plaintext behind (the cache holds its own
// copy, zeroed on eviction).
func (c *keyCache) runFlight(ctx context.Context, fk flightKey, f *flight, epoch uint64, wrapped []byte, load loadFunc) {
	key, err := load(ctx)
	if err == nil && len(key) != keySize {
		clear(key)
		key, err = nil, kluis.Errorf(kluis.EInternal, "internal error")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.flights, fk)
	f.key, f.err = key, err
	close(f.done)
	if f.waiters == 0 {
		defer clear(key) // after the cache has taken its copy
	}
	if err != nil {
		return
	}
	c.stats.Loads++
	// Every waiter takes one use of this unwrap.
	if c.epoch != epoch || f.waiters >= c.opts.MaxUses {
		return
	}
	c.insertLocked(&cacheEntry{
		id:       fk.cacheKey,
		wrapped:  bytes.Clone(wrapped),
		key:      bytes.Clone(key),
		loadedAt: c.opts.Clock.Now(),
		uses:     f.waiters,
	})
}

// leave drops one waiter from f, returning a copy of its key when take is
// set and the load succeeded; the last waiter zeroes the shared key.
func (c *keyCache) leave(f *flight, take bool) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []byte
	if take && f.err == nil {
		out = bytes.Clone(f.key)
	}
	f.waiters--
	if f.waiters == 0 {
		select {
		case <-f.done:
			clear(f.key)
		default:
			// Every waiter gave up while the load still runs: runFlight
			// finds no waiter left when it ends, and zeroes the key itself.
		}
	}
	return out
}

// put caches a key the caller just generated (and still owns), so that the
// first uses after creation need no unwrap. It counts as one use.
func (c *keyCache) put(id cacheKey, wrapped, key []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[id]; e != nil {
		c.removeLocked(e)
	}
	if c.opts.MaxUses <= 1 {
		return
	}
	c.insertLocked(&cacheEntry{
		id:       id,
		wrapped:  bytes.Clone(wrapped),
		key:      bytes.Clone(key),
		loadedAt: c.opts.Clock.Now(),
		uses:     1,
	})
}

func (c *keyCache) insertLocked(e *cacheEntry) {
	if old := c.entries[e.id]; old != nil {
		c.removeLocked(old)
	}
	e.elem = c.order.PushFront(e)
	c.entries[e.id] = e
	for len(c.entries) > c.opts.MaxKeys {
		c.removeLocked(c.order.Back().Value.(*cacheEntry))
	}
}

// removeLocked evicts e and zeroes its key.
func (c *keyCache) removeLocked(e *cacheEntry) {
	clear(e.key)
	c.order.Remove(e.elem)
	delete(c.entries, e.id)
	c.stats.Evictions++
}

// expireLocked evicts every entry past its age. Entries are ordered by load
// time, so the expired ones are all at the back.
func (c *keyCache) expireLocked() {
	now := c.opts.Clock.Now()
	for back := c.order.Back(); back != nil; back = c.order.Back() {
		e := back.Value.(*cacheEntry)
		if now.Sub(e.loadedAt) < c.opts.MaxAge {
			return
		}
		c.removeLocked(e)
	}
}

// expire evicts and zeroes every key past its age.
func (c *keyCache) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked()
}

// evictSubject zeroes and forgets every cached key of subject, and makes any
// load already running for any subject hand its key out without caching it.
func (c *keyCache) evictSubject(subject string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for id, e := range c.entries {
		if id.subject == subject {
			c.removeLocked(e)
		}
	}
}

// purge zeroes and forgets every cached key.
func (c *keyCache) purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for _, e := range c.entries {
		c.removeLocked(e)
	}
}

func (c *keyCache) snapshot() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Cached = len(c.entries)
	return s
}
