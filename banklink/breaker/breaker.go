// Package breaker puts a circuit breaker in front of a banklink.Provider,
// so that a provider that is down (Plaid unreachable, failing) is not
// hammered and callers get their 503 at once. Only the provider's own
// unavailability counts: an institution that is down (CodeInstitutionDown)
// is one bank's problem, not the provider's, and must not cut off the
// others; refusals and the provider's rate limits are answers, not failures.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
)

// Options tune the breaker; zero values take the defaults.
type Options struct {
	// Failures in a row that open the breaker (5).
	Failures uint32
	// OpenFor is how long it stays open before one trial call (15 s).
	OpenFor time.Duration
}

// Provider is a banklink.Provider behind a circuit breaker.
type Provider struct {
	next banklink.Provider
	cb   *gobreaker.CircuitBreaker[any]
}

var _ banklink.Provider = (*Provider)(nil)

// New wraps next.
func New(next banklink.Provider, o Options) *Provider {
	if o.Failures == 0 {
		o.Failures = 5
	}
	if o.OpenFor == 0 {
		o.OpenFor = 15 * time.Second
	}
	p := &Provider{next: next}
	p.cb = gobreaker.NewCircuitBreaker[any](gobreaker.Settings{
		Name:         "bank_provider_" + next.Name(),
		MaxRequests:  1,
		Timeout:      o.OpenFor,
		ReadyToTrip:  func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= o.Failures },
		IsSuccessful: func(err error) bool { return kluis.ErrorCode(err) != kluis.EUnavailable },
		IsExcluded:   func(err error) bool { return errors.Is(err, context.Canceled) },
	})
	return p
}

// State is the breaker's state: 0 closed, 1 half-open, 2 open.
func (p *Provider) State() int { return int(p.cb.State()) }

// Collector is the gauge kluis_bank_provider_breaker_state{provider} (0
// closed, 1 half-open, 2 open), for the registry /metrics serves.
func (p *Provider) Collector() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "kluis_bank_provider_breaker_state",
		Help:        "State of the bank provider's circuit breaker: 0 closed, 1 half-open, 2 open.",
		ConstLabels: prometheus.Labels{"provider": p.next.Name()},
	}, func() float64 { return float64(p.State()) })
}

func do[T any](p *Provider, call func() (T, error)) (T, error) {
	v, err := p.cb.Execute(func() (any, error) { return call() })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		var zero T
		return zero, kluis.Unavailable("bank provider", fmt.Errorf("%w: circuit breaker open after repeated failures", banklink.ErrProvider))
	}
	t, _ := v.(T)
	return t, err
}

// Name implements banklink.Provider.
func (p *Provider) Name() string { return p.next.Name() }

// CreateLinkToken implements banklink.Provider.
func (p *Provider) CreateLinkToken(ctx context.Context, req banklink.LinkTokenRequest) (banklink.LinkToken, error) {
	return do(p, func() (banklink.LinkToken, error) { return p.next.CreateLinkToken(ctx, req) })
}

// ExchangePublicToken implements banklink.Provider.
func (p *Provider) ExchangePublicToken(ctx context.Context, publicToken string) (banklink.Exchange, error) {
	return do(p, func() (banklink.Exchange, error) { return p.next.ExchangePublicToken(ctx, publicToken) })
}

// GetAccounts implements banklink.Provider.
func (p *Provider) GetAccounts(ctx context.Context, accessToken string) (banklink.ItemAccounts, error) {
	return do(p, func() (banklink.ItemAccounts, error) { return p.next.GetAccounts(ctx, accessToken) })
}

// GetAuth implements banklink.Provider.
func (p *Provider) GetAuth(ctx context.Context, accessToken string) ([]banklink.AuthNumbers, error) {
	return do(p, func() ([]banklink.AuthNumbers, error) { return p.next.GetAuth(ctx, accessToken) })
}

// RemoveItem implements banklink.Provider.
func (p *Provider) RemoveItem(ctx context.Context, accessToken string) error {
	_, err := do(p, func() (struct{}, error) { return struct{}{}, p.next.RemoveItem(ctx, accessToken) })
	return err
}

// RotateAccessToken implements banklink.Provider.
func (p *Provider) RotateAccessToken(ctx context.Context, accessToken string) (string, error) {
	return do(p, func() (string, error) { return p.next.RotateAccessToken(ctx, accessToken) })
}

// VerifyWebhook implements banklink.Provider. It goes through the breaker
// too: verifying may fetch the provider's signing keys.
func (p *Provider) VerifyWebhook(ctx context.Context, header http.Header, body []byte) (banklink.WebhookEvent, error) {
	return do(p, func() (banklink.WebhookEvent, error) { return p.next.VerifyWebhook(ctx, header, body) })
}
