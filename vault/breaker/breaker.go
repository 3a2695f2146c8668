// Package breaker puts a circuit breaker in front of a vault.KeyProvider: a
// provider that keeps failing is left alone for a while, and callers get
// vault.ErrKeyUnavailable (their 503) at once instead of each waiting out
// the provider's timeout. Only unavailability counts as failure: a provider
// that answers and refuses is working.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/kluis-dev/kluis/vault"
)

// Options tune the breaker; zero values take the defaults.
type Options struct {
	// Failures in a row that open the breaker (5).
	Failures uint32
	// OpenFor is how long it stays open before one trial call (10 s).
	OpenFor time.Duration
}

// Provider is a vault.KeyProvider behind a circuit breaker.
type Provider struct {
	next vault.KeyProvider
	cb   *gobreaker.CircuitBreaker[any]
}

var _ vault.KeyProvider = (*Provider)(nil)

// New wraps next.
func New(next vault.KeyProvider, o Options) *Provider {
	if o.Failures == 0 {
		o.Failures = 5
	}
	if o.OpenFor == 0 {
		o.OpenFor = 10 * time.Second
	}
	p := &Provider{next: next}
	p.cb = gobreaker.NewCircuitBreaker[any](gobreaker.Settings{
		Name:        "key_provider",
		MaxRequests: 1,
		Timeout:     o.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= o.Failures },
		// A refusal is an answer; only unavailability is failure.
		IsSuccessful: func(err error) bool { return !errors.Is(err, vault.ErrKeyUnavailable) },
		// A caller that gave up says nothing about the provider.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
	})
	return p
}

// Collector is the gauge kluis_key_provider_breaker_state (0 closed, 1
// half-open, 2 open), for the registry /metrics serves.
func (p *Provider) Collector() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kluis_key_provider_breaker_state",
		Help: "State of the key provider's circuit breaker: 0 closed, 1 half-open, 2 open.",
	}, func() float64 { return float64(p.State()) })
}

// State is the breaker's state: 0 closed, 1 half-open, 2 open.
func (p *Provider) State() int { return int(p.cb.State()) }

// do runs call through the breaker; an open breaker is unavailability.
func do[T any](p *Provider, call func() (T, error)) (T, error) {
	v, err := p.cb.Execute(func() (any, error) { return call() })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		var zero T
		return zero, fmt.Errorf("%w: circuit breaker open after repeated failures", vault.ErrKeyUnavailable)
	}
	t, _ := v.(T)
	return t, err
}

// GenerateDataKey implements vault.KeyProvider.
func (p *Provider) GenerateDataKey(ctx context.Context, keyID string) (vault.DataKey, error) {
	return do(p, func() (vault.DataKey, error) { return p.next.GenerateDataKey(ctx, keyID) })
}

// Unwrap implements vault.KeyProvider.
func (p *Provider) Unwrap(ctx context.Context, keyID string, wrapped vault.WrappedKey) ([]byte, error) {
	return do(p, func() ([]byte, error) { return p.next.Unwrap(ctx, keyID, wrapped) })
}

// Rewrap implements vault.KeyProvider.
func (p *Provider) Rewrap(ctx context.Context, keys []vault.RewrapItem) ([]vault.WrappedKey, error) {
	return do(p, func() ([]vault.WrappedKey, error) { return p.next.Rewrap(ctx, keys) })
}

// Describe implements vault.KeyProvider.
func (p *Provider) Describe(ctx context.Context) (vault.RootKeyInfo, error) {
	return do(p, func() (vault.RootKeyInfo, error) { return p.next.Describe(ctx) })
}

// Close closes the wrapped provider if it has a Close.
func (p *Provider) Close() error {
	if c, ok := p.next.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}
