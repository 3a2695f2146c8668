package vault

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"sync/atomic"
	"time"
)

// fakeProvider is a KeyProvider for tests: AES-GCM wrap under an in-memory
// root key bound to the key id, with call counters, a switch that makes every
// call fail with ErrKeyUnavailable, one that makes it refuse, and an optional
// gate that holds Unwrap until the test opens it.
type fakeProvider struct {
	aead cipher.AEAD

	generates atomic.Int64
	unwraps   atomic.Int64

	unavailable atomic.Bool
	refuse      atomic.Bool
	// gate, when set, makes Unwrap wait for it to close.
	gate atomic.Pointer[chan struct{}]
}

var _ KeyProvider = (*fakeProvider)(nil)

func newFakeProvider() *fakeProvider {
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
	return &fakeProvider{aead: aead}
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

func (p *fakeProvider) wrap(keyID string, key []byte) []byte {
	nonce := make([]byte, p.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return p.aead.Seal(nonce, nonce, key, []byte(keyID))
}

func (p *fakeProvider) GenerateDataKey(ctx context.Context, keyID string) (DataKey, error) {
	p.generates.Add(1)
	if err := p.fail(); err != nil {
		return DataKey{}, err
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return DataKey{Plaintext: key, Wrapped: WrappedKey{Ciphertext: p.wrap(keyID, key), RootVersion: "1"}}, nil
}

func (p *fakeProvider) Unwrap(ctx context.Context, keyID string, w WrappedKey) ([]byte, error) {
	p.unwraps.Add(1)
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
	n := p.aead.NonceSize()
	if len(w.Ciphertext) < n {
		return nil, fmt.Errorf("fake: short wrapped key: %w", ErrKeyRefused)
	}
	key, err := p.aead.Open(nil, w.Ciphertext[:n], w.Ciphertext[n:], []byte(keyID))
	if err != nil {
		return nil, fmt.Errorf("fake: cannot unwrap: %w", ErrKeyRefused)
	}
	return key, nil
}

func (p *fakeProvider) Rewrap(ctx context.Context, items []RewrapItem) ([]WrappedKey, error) {
	out := make([]WrappedKey, 0, len(items))
	for _, it := range items {
		key, err := p.Unwrap(ctx, it.KeyID, it.Wrapped)
		if err != nil {
			return nil, err
		}
		out = append(out, WrappedKey{Ciphertext: p.wrap(it.KeyID, key), RootVersion: "1"})
		clear(key)
	}
	return out, nil
}

func (p *fakeProvider) Describe(ctx context.Context) (RootKeyInfo, error) {
	if err := p.fail(); err != nil {
		return RootKeyInfo{}, err
	}
	return RootKeyInfo{Provider: "fake", KeyID: "fake", LatestVersion: "1"}, nil
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
