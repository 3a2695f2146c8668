package breaker

import (
	"context"

	"github.com/kluis-dev/kluis/banklink"
)

// UpdateWebhook implements banklink.WebhookUpdater through the breaker;
// banklink.ErrWebhookUpdateUnsupported when the provider has none.
func (p *Provider) UpdateWebhook(ctx context.Context, accessToken, url string) error {
	up, ok := p.next.(banklink.WebhookUpdater)
	if !ok {
		return banklink.ErrWebhookUpdateUnsupported
	}
	_, err := do(p, func() (struct{}, error) { return struct{}{}, up.UpdateWebhook(ctx, accessToken, url) })
	return err
}

var _ banklink.WebhookUpdater = (*Provider)(nil)
