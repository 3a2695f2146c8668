package vault

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// fakeProvider is a KeyProvider for tests: AES-GCM wrap under an in-memory
// root key bound to the key id, with call counters, a switch that makes every
// call fail with ErrKeyUnavailable, one that makes it refuse, and an optional
// gate that holds Unwrap until the test opens it.
type fakeProvider struct {
	mu     sync.Mutex
	roots  map[string]cipher.AEAD // by root version
	latest string

	generates atomic.Int64
	unwraps   atomic.Int64
	rewraps   atomic.Int64

	unavailable atomic.Bool
	refuse      atomic.Bool
	// gate, when set, makes Unwrap wait for it to close.
	gate atomic.Pointer[chan struct{}]
}

var _ KeyProvider = (*fakeProvider)(nil)

func newFakeProvider() *fakeProvider {
	p := &fakeProvider{roots: make(map[string]cipher.AEAD)}
	p.rotateRoot("1")
	return p
}

// rotateRoot makes a new root key version the newest; retireRoot forgets one,
// so that keys still wrapped under it no longer unwrap.
func (p *fakeProvider) rotateRoot(version string) {
	root := make([]byte, 32)
	_, _ = rand.Read(root)
	block, err := aes.NewCipher(root)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.roots[version] = aead
	p.latest = version
}

func (p *fakeProvider) retireRoot(version string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.roots, version)
}

func (p *fakeProvider) root(version string) (cipher.AEAD, string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if version == "" {
		version = p.latest
	}
	a, ok := p.roots[version]
	return a, version, ok
}

func (p *fakeProvider) fail() error {
	if p.unavailable.Load() {
		return fmt.Errorf("fake: connection refused: %w", ErrKeyUnavailable)
	}
	if p.refuse.Load() {
		return fmt.Errorf("fake: access denied: %w", ErrKeyRefused)
	}
	return nil
}

// wrap wraps key under the newest root version.
func (p *fakeProvider) wrap(keyID string, key []byte) WrappedKey {
	aead, version, _ := p.root("")
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	return WrappedKey{Ciphertext: aead.Seal(nonce, nonce, key, []byte(keyID)), RootVersion: version}
}

func (p *fakeProvider) GenerateDataKey(ctx context.Context, keyID string) (DataKey, error) {
	p.generates.Add(1)
	if err := p.fail(); err != nil {
		return DataKey{}, err
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return DataKey{Plaintext: key, Wrapped: p.wrap(keyID, key)}, nil
}

func (p *fakeProvider) Unwrap(ctx context.Context, keyID string, w WrappedKey) ([]byte, error) {
	p.unwraps.Add(1)
	return p.unwrap(ctx, keyID, w)
}

// unwrap is Unwrap without its count, for Rewrap.
func (p *fakeProvider) unwrap(ctx context.Context, keyID string, w WrappedKey) ([]byte, error) {
	if g := p.gate.Load(); g != nil {
		select {
		case <-*g:
		case <-ctx.Done():
			return nil, fmt.Errorf("fake: %w: %w", ErrKeyUnavailable, ctx.Err())
		}
	}
	if err := p.fail(); err != nil {
		return nil, err
	}
	aead, _, ok := p.root(w.RootVersion)
	if !ok || w.RootVersion == "" {
		return nil, fmt.Errorf("fake: unknown root version: %w", ErrKeyRefused)
	}
	n := aead.NonceSize()
	if len(w.Ciphertext) < n {
		return nil, fmt.Errorf("fake: short wrapped key: %w", ErrKeyRefused)
	}
	key, err := aead.Open(nil, w.Ciphertext[:n], w.Ciphertext[n:], []byte(keyID))
	if err != nil {
		return nil, fmt.Errorf("fake: cannot unwrap: %w", ErrKeyRefused)
	}
	return key, nil
}

func (p *fakeProvider) Rewrap(ctx context.Context, items []RewrapItem) ([]WrappedKey, error) {
	p.rewraps.Add(1)
	out := make([]WrappedKey, 0, len(items))
	for _, it := range items {
		key, err := p.unwrap(ctx, it.KeyID, it.Wrapped)
		if err != nil {
			return nil, err
		}
		out = append(out, p.wrap(it.KeyID, key))
		clear(key)
	}
	return out, nil
}

func (p *fakeProvider) Describe(ctx context.Context) (RootKeyInfo, error) {
	if err := p.fail(); err != nil {
		return RootKeyInfo{}, err
	}
	_, latest, _ := p.root("")
	return RootKeyInfo{Provider: "fake", KeyID: "fake", LatestVersion: latest}, nil
}

// calls counts every call to the provider.
func (p *fakeProvider) calls() int64 {
	return p.generates.Load() + p.unwraps.Load() + p.rewraps.Load()
}

// fakeClock is a settable clock.
type fakeClock struct{ now atomic.Pointer[time.Time] }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c.now.Store(&t)
	return c
}

func (c *fakeClock) Now() time.Time { return *c.now.Load() }

func (c *fakeClock) Advance(d time.Duration) {
	t := c.Now().Add(d)
	c.now.Store(&t)
}
