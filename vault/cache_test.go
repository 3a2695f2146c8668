package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingLoad returns a load function that hands out a fresh copy of key
// and counts its calls.
func countingLoad(key []byte, calls *atomic.Int64) loadFunc {
	return func(context.Context) ([]byte, error) {
		calls.Add(1)
		return bytes.Clone(key), nil
	}
}

func randomKey(t testing.TB, fill byte) []byte {
	t.Helper()
	return bytes.Repeat([]byte{fill}, keySize)
}

// cachedKeyBytes returns the cache's own slice for id (not a copy), so that a
// test can see it zeroed after eviction.
func cachedKeyBytes(t *testing.T, c *keyCache, id cacheKey) []byte {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[id]
	if e == nil {
		t.Fatalf("%v is not cached", id)
	}
	return e.key
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func mustGet(t *testing.T, c *keyCache, id cacheKey, wrapped []byte, load loadFunc) []byte {
	t.Helper()
	k, err := c.get(context.Background(), id, wrapped, load)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCacheServesRepeatUsesWithoutLoading(t *testing.T) {
	t.Parallel()
	c := newKeyCache(CacheOptions{})
	var calls atomic.Int64
	key := randomKey(t, 7)
	id := cacheKey{"sub_a", 1}
	for i := 0; i < 1000; i++ {
		got := mustGet(t, c, id, []byte("w"), countingLoad(key, &calls))
		if !bytes.Equal(got, key) {
			t.Fatal("wrong key")
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("%d loads for 1,000 uses, want 1", calls.Load())
	}
}

func TestCacheHandsOutCopiesTheCallerMayZero(t *testing.T) {
	t.Parallel()
	c := newKeyCache(CacheOptions{})
	var calls atomic.Int64
	key := randomKey(t, 9)
	id := cacheKey{"sub_a", 1}
	first := mustGet(t, c, id, []byte("w"), countingLoad(key, &calls))
	clear(first)
	second := mustGet(t, c, id, []byte("w"), countingLoad(key, &calls))
	if !bytes.Equal(second, key) {
		t.Fatal("zeroing a handed-out key zeroed the cached one")
	}
}

func TestCacheBoundsEvictAndZero(t *testing.T) {
	t.Parallel()
	wrapped := []byte("w")
	tests := []struct {
		name string
		opts CacheOptions
		// use exercises the cache after the first load of id; it returns
		// whether the next get should need a load.
		use func(t *testing.T, c *keyCache, clk *fakeClock, id cacheKey, load loadFunc)
	}{
		{
			name: "a key past its age is evicted",
			opts: CacheOptions{MaxAge: time.Minute},
			use: func(t *testing.T, c *keyCache, clk *fakeClock, id cacheKey, load loadFunc) {
				clk.Advance(time.Minute)
				c.expire()
			},
		},
		{
			name: "a key that served its last use is evicted",
			opts: CacheOptions{MaxUses: 3},
			use: func(t *testing.T, c *keyCache, clk *fakeClock, id cacheKey, load loadFunc) {
				mustGet(t, c, id, wrapped, load)
				mustGet(t, c, id, wrapped, load)
			},
		},
		{
			name: "the oldest key goes when the cache is full",
			opts: CacheOptions{MaxKeys: 2},
			use: func(t *testing.T, c *keyCache, clk *fakeClock, id cacheKey, load loadFunc) {
				clk.Advance(time.Second)
				mustGet(t, c, cacheKey{"sub_b", 1}, wrapped, load)
				clk.Advance(time.Second)
				mustGet(t, c, cacheKey{"sub_c", 1}, wrapped, load)
			},
		},
		{
			name: "destroying the subject's keys evicts them",
			opts: CacheOptions{},
			use: func(t *testing.T, c *keyCache, clk *fakeClock, id cacheKey, load loadFunc) {
				c.evictSubject(id.subject)
			},
		},
		{
			name: "a key wrapped differently in the key store is not served",
			opts: CacheOptions{},
			use: func(t *testing.T, c *keyCache, clk *fakeClock, id cacheKey, load loadFunc) {
				mustGet(t, c, id, []byte("rewrapped"), load)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := newFakeClock()
			opts := tt.opts
			opts.Clock = clk
			c := newKeyCache(opts)
			var calls atomic.Int64
			load := countingLoad(randomKey(t, 5), &calls)
			id := cacheKey{"sub_a", 1}
			mustGet(t, c, id, wrapped, load)
			held := cachedKeyBytes(t, c, id)
			tt.use(t, c, clk, id, load)
			if !isZero(held) {
				t.Fatal("the evicted key was not zeroed")
			}
			before := calls.Load()
			mustGet(t, c, id, wrapped, load)
			if calls.Load() != before+1 {
				t.Fatal("the key was still served from the cache")
			}
		})
	}
}

func TestConcurrentMissesMakeOneLoad(t *testing.T) {
	t.Parallel()
	c := newKeyCache(CacheOptions{})
	key := randomKey(t, 3)
	id := cacheKey{"sub_a", 1}
	gate := make(chan struct{})
	var calls atomic.Int64
	load := func(context.Context) ([]byte, error) {
		calls.Add(1)
		<-gate
		return bytes.Clone(key), nil
	}
	const n = 64
	var wg sync.WaitGroup
	got := make([][]byte, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = c.get(context.Background(), id, []byte("w"), load)
		}()
	}
	waitForWaiters(t, c, flightKey{id, "w"}, n)
	close(gate)
	wg.Wait()
	if calls.Load() != 1 {
		t.Fatalf("%d loads for %d concurrent misses, want 1", calls.Load(), n)
	}
	for i := range got {
		if errs[i] != nil || !bytes.Equal(got[i], key) {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
	}
	if s := c.snapshot(); s.Misses != 1 || s.Cached != 1 {
		t.Fatalf("stats %+v, want one miss and one cached key", s)
	}
}

// waitForWaiters blocks until n goroutines wait on the flight fk.
func waitForWaiters(t *testing.T, c *keyCache, fk flightKey, n int) {
	t.Helper()
	for {
		c.mu.Lock()
		f := c.flights[fk]
		w := 0
		if f != nil {
			w = f.waiters
		}
		c.mu.Unlock()
		if w == n {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAFailedLoadIsNotCached(t *testing.T) {
	t.Parallel()
	c := newKeyCache(CacheOptions{})
	boom := errors.New("boom")
	id := cacheKey{"sub_a", 1}
	_, err := c.get(context.Background(), id, []byte("w"), func(context.Context) ([]byte, error) { return nil, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the load's error", err)
	}
	var calls atomic.Int64
	mustGet(t, c, id, []byte("w"), countingLoad(randomKey(t, 1), &calls))
	if calls.Load() != 1 {
		t.Fatal("the failure was cached")
	}
}

func TestALoadRunningWhileKeysAreDestroyedIsNotCached(t *testing.T) {
	t.Parallel()
	c := newKeyCache(CacheOptions{})
	id := cacheKey{"sub_a", 1}
	var calls atomic.Int64
	load := func(context.Context) ([]byte, error) {
		calls.Add(1)
		c.evictSubject("sub_a") // the erasure lands while the unwrap runs
		return randomKey(t, 2), nil
	}
	mustGet(t, c, id, []byte("w"), load)
	if s := c.snapshot(); s.Cached != 0 {
		t.Fatal("a key loaded across a destruction was cached")
	}
}

func TestAWaiterThatGivesUpLeavesTheOthersTheirKey(t *testing.T) {
	t.Parallel()
	c := newKeyCache(CacheOptions{})
	id := cacheKey{"sub_a", 1}
	key := randomKey(t, 4)
	gate := make(chan struct{})
	load := func(context.Context) ([]byte, error) {
		<-gate
		return bytes.Clone(key), nil
	}
	leaderDone := make(chan []byte)
	go func() {
		k, _ := c.get(context.Background(), id, []byte("w"), load)
		leaderDone <- k
	}()
	waitForWaiters(t, c, flightKey{id, "w"}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	waiterDone := make(chan error)
	go func() {
		_, err := c.get(ctx, id, []byte("w"), load)
		waiterDone <- err
	}()
	waitForWaiters(t, c, flightKey{id, "w"}, 2)
	cancel()
	if err := <-waiterDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	close(gate)
	if k := <-leaderDone; !bytes.Equal(k, key) {
		t.Fatal("the leader lost its key")
	}
}

func TestAWaiterThatGivesUpDoesNotFailTheOthers(t *testing.T) {
	c := newKeyCache(CacheOptions{})
	release := make(chan struct{})
	load := func(ctx context.Context) ([]byte, error) {
		select {
		case <-release:
			return bytes.Repeat([]byte{7}, keySize), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	id := cacheKey{subject: "sub_a", version: 1}
	first, hangUp := context.WithCancel(context.Background())
	firstDone := make(chan error, 1)
	go func() {
		_, err := c.get(first, id, []byte("w"), load)
		firstDone <- err
	}()
	// Wait until the first caller's load is in flight, then join it.
	for {
		c.mu.Lock()
		n := len(c.flights)
		c.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	secondDone := make(chan error, 1)
	go func() {
		key, err := c.get(context.Background(), id, []byte("w"), load)
		if err == nil && len(key) != keySize {
			err = fmt.Errorf("key of %d bytes", len(key))
		}
		secondDone <- err
	}()
	hangUp()
	if err := <-firstDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller that hung up got %v, want its own cancellation", err)
	}
	close(release)
	if err := <-secondDone; err != nil {
		t.Fatalf("the other waiter failed with the first caller's cancellation: %v", err)
	}
}

// TestAnUnwrapEveryWaiterGaveUpOnIsZeroed is issue 11 item 9: every caller
// waiting on an unwrap gives up before the provider answers. The plaintext
// key the provider then returns must not outlive the load: it is zeroed, and
// only the cache's own copy (zeroed on eviction) remains, or none when the
// subject's keys were destroyed meanwhile.
func TestAnUnwrapEveryWaiterGaveUpOnIsZeroed(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		destroy bool // the subject's keys are destroyed while the unwrap runs
	}{
		{"the key is cached", false},
		{"the keys were destroyed meanwhile", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const waiters = 8
			c := newKeyCache(CacheOptions{})
			id := cacheKey{"sub_a", 1}
			fk := flightKey{id, "w"}
			gate := make(chan struct{})
			loaded := make(chan []byte, 1)
			load := func(context.Context) ([]byte, error) {
				<-gate
				if tt.destroy {
					c.evictSubject("sub_a")
				}
				k := randomKey(t, 9)
				loaded <- k // the test keeps the provider's plaintext to look at it
				return k, nil
			}
			var wg sync.WaitGroup
			cancels := make([]context.CancelFunc, waiters)
			for i := range waiters {
				ctx, cancel := context.WithCancel(context.Background())
				cancels[i] = cancel
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := c.get(ctx, id, []byte("w"), load); !errors.Is(err, context.Canceled) {
						t.Errorf("a waiter that gave up got %v, want context.Canceled", err)
					}
				}()
			}
			waitForWaiters(t, c, fk, waiters)
			for _, cancel := range cancels {
				cancel()
			}
			wg.Wait()
			close(gate)
			plaintext := <-loaded
			waitForFlightEnd(t, c, fk)
			if !isZero(plaintext) {
				t.Fatal("the unwrapped key outlived its load: nobody zeroed it")
			}
			c.mu.Lock()
			e := c.entries[id]
			c.mu.Unlock()
			switch {
			case tt.destroy && e != nil:
				t.Fatal("a key loaded across a destruction was cached")
			case !tt.destroy && (e == nil || isZero(e.key)):
				t.Fatal("the loaded key was not cached")
			case !tt.destroy:
				cachedCopy := e.key
				c.purge()
				if !isZero(cachedCopy) {
					t.Fatal("the cache's copy was not zeroed on eviction")
				}
			}
		})
	}
}

// waitForFlightEnd waits until the flight fk has ended (runFlight has run
// under the cache's lock, zeroing included).
func waitForFlightEnd(t *testing.T, c *keyCache, fk flightKey) {
	t.Helper()
	for {
		c.mu.Lock()
		_, running := c.flights[fk]
		c.mu.Unlock()
		if !running {
			return
		}
		time.Sleep(time.Millisecond)
	}
}
