package vault

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kluis-dev/kluis/breaker"
)

// GuardedKeyProvider is a KeyProvider behind a circuit breaker: a provider
// that keeps failing is left alone for a while, and callers get
// ErrKeyUnavailable (their 503) at once instead of each waiting out the
// provider's timeout. Only unavailability counts as failure: a provider
// that answers and refuses is working. Its gauge is
// kluis_key_provider_breaker_state.
type GuardedKeyProvider struct {
	*breaker.Breaker
	next KeyProvider
}

var _ KeyProvider = (*GuardedKeyProvider)(nil)

// GuardKeyProvider puts next behind a breaker (5 failures, open 10 s by
// default).
func GuardKeyProvider(next KeyProvider, o breaker.Options) *GuardedKeyProvider {
	return &GuardedKeyProvider{next: next, Breaker: breaker.New(breaker.Config{
		Name:           "key_provider",
		Failure:        func(err error) bool { return errors.Is(err, ErrKeyUnavailable) },
		Unavailable:    func(open error) error { return fmt.Errorf("%w: %w", ErrKeyUnavailable, open) },
		Metric:         "kluis_key_provider_breaker_state",
		Help:           "State of the key provider's circuit breaker: 0 closed, 1 half-open, 2 open.",
		DefaultOpenFor: 10 * time.Second,
	}, o)}
}

// GenerateDataKey implements KeyProvider.
func (p *GuardedKeyProvider) GenerateDataKey(ctx context.Context, keyID string) (DataKey, error) {
	return breaker.Do(p.Breaker, func() (DataKey, error) { return p.next.GenerateDataKey(ctx, keyID) })
}

// Unwrap implements KeyProvider.
func (p *GuardedKeyProvider) Unwrap(ctx context.Context, keyID string, wrapped WrappedKey) ([]byte, error) {
	return breaker.Do(p.Breaker, func() ([]byte, error) { return p.next.Unwrap(ctx, keyID, wrapped) })
}

// Rewrap implements KeyProvider.
func (p *GuardedKeyProvider) Rewrap(ctx context.Context, keys []RewrapItem) ([]WrappedKey, error) {
	return breaker.Do(p.Breaker, func() ([]WrappedKey, error) { return p.next.Rewrap(ctx, keys) })
}

// Describe implements KeyProvider.
func (p *GuardedKeyProvider) Describe(ctx context.Context) (RootKeyInfo, error) {
	return breaker.Do(p.Breaker, func() (RootKeyInfo, error) { return p.next.Describe(ctx) })
}

// Close closes the wrapped provider if it has a Close.
func (p *GuardedKeyProvider) Close() error {
	if c, ok := p.next.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}
