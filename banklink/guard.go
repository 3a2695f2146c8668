package banklink

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/breaker"
)

// GuardedProvider is a Provider behind a circuit breaker, so that a
// provider that is down (unreachable, failing) is not hammered and callers
// get their 503 at once. Only the provider's own unavailability counts: an
// institution that is down (CodeInstitutionDown) is one bank's problem, not
// the provider's, and must not cut off the others; refusals and the
// provider's rate limits are answers, not failures. Its gauge is
// kluis_bank_provider_breaker_state{provider}.
type GuardedProvider struct {
	*breaker.Breaker
	next Provider
}

var (
	_ Provider       = (*GuardedProvider)(nil)
	_ WebhookUpdater = (*GuardedProvider)(nil)
)

// GuardProvider puts next behind a breaker of its own (5 failures, open
// 15 s by default).
func GuardProvider(next Provider, o breaker.Options) *GuardedProvider {
	return &GuardedProvider{next: next, Breaker: breaker.New(breaker.Config{
		Name:    "bank_provider_" + next.Name(),
		Failure: func(err error) bool { return kluis.ErrorCode(err) == kluis.EUnavailable },
		Unavailable: func(open error) error {
			return kluis.Unavailable("bank provider", fmt.Errorf("%w: %w", ErrProvider, open))
		},
		Metric:         "kluis_bank_provider_breaker_state",
		Help:           "State of the bank provider's circuit breaker: 0 closed, 1 half-open, 2 open.",
		Labels:         map[string]string{"provider": next.Name()},
		DefaultOpenFor: 15 * time.Second,
	}, o)}
}

// Unwrap returns the provider behind the breaker, for the optional
// interfaces (OAuthProvider, ExpiringTokens) whose methods call nothing
// and so need no breaker.
func (p *GuardedProvider) Unwrap() Provider { return p.next }

// Name implements Provider.
func (p *GuardedProvider) Name() string { return p.next.Name() }

// CreateLinkToken implements Provider.
func (p *GuardedProvider) CreateLinkToken(ctx context.Context, req LinkTokenRequest) (LinkToken, error) {
	return breaker.Do(p.Breaker, func() (LinkToken, error) { return p.next.CreateLinkToken(ctx, req) })
}

// ExchangePublicToken implements Provider.
func (p *GuardedProvider) ExchangePublicToken(ctx context.Context, publicToken string) (Exchange, error) {
	return breaker.Do(p.Breaker, func() (Exchange, error) { return p.next.ExchangePublicToken(ctx, publicToken) })
}

// GetAccounts implements Provider.
func (p *GuardedProvider) GetAccounts(ctx context.Context, accessToken string) (ItemAccounts, error) {
	return breaker.Do(p.Breaker, func() (ItemAccounts, error) { return p.next.GetAccounts(ctx, accessToken) })
}

// GetAuth implements Provider.
func (p *GuardedProvider) GetAuth(ctx context.Context, accessToken string) ([]AuthNumbers, error) {
	return breaker.Do(p.Breaker, func() ([]AuthNumbers, error) { return p.next.GetAuth(ctx, accessToken) })
}

// RemoveItem implements Provider.
func (p *GuardedProvider) RemoveItem(ctx context.Context, accessToken string) error {
	return breaker.Run(p.Breaker, func() error { return p.next.RemoveItem(ctx, accessToken) })
}

// RotateAccessToken implements Provider.
func (p *GuardedProvider) RotateAccessToken(ctx context.Context, accessToken string) (string, error) {
	return breaker.Do(p.Breaker, func() (string, error) { return p.next.RotateAccessToken(ctx, accessToken) })
}

// VerifyWebhook implements Provider. It goes through the breaker too:
// verifying may fetch the provider's signing keys.
func (p *GuardedProvider) VerifyWebhook(ctx context.Context, header http.Header, body []byte) (WebhookEvent, error) {
	return breaker.Do(p.Breaker, func() (WebhookEvent, error) { return p.next.VerifyWebhook(ctx, header, body) })
}

// UpdateWebhook implements WebhookUpdater through the breaker;
// ErrWebhookUpdateUnsupported when the provider has none.
func (p *GuardedProvider) UpdateWebhook(ctx context.Context, accessToken, url string) error {
	up, ok := p.next.(WebhookUpdater)
	if !ok {
		return ErrWebhookUpdateUnsupported
	}
	return breaker.Run(p.Breaker, func() error { return up.UpdateWebhook(ctx, accessToken, url) })
}
