package plaid

import (
	"context"

	"github.com/kluis-dev/kluis/banklink"
)

// epItemWebhookUpdate points an item's webhooks at a new URL. Setting the
// same URL twice is harmless, so it may be repeated.
var epItemWebhookUpdate = endpoint{"/item/webhook/update", true}

type itemWebhookUpdateRequest struct {
	AccessToken string `json:"access_token"`
	Webhook     string `json:"webhook"`
}

// UpdateWebhook implements banklink.WebhookUpdater: Plaid sends the item's
// webhooks to url from now on, and acknowledges with a
// WEBHOOK_UPDATE_ACKNOWLEDGED webhook sent there.
func (p *Provider) UpdateWebhook(ctx context.Context, accessToken, url string) error {
	if accessToken == "" {
		return providerError(banklink.CodeInvalidToken, "plaid: empty access token", nil)
	}
	var out struct {
		Item item `json:"item"`
	}
	if err := p.call(ctx, epItemWebhookUpdate, itemWebhookUpdateRequest{AccessToken: accessToken, Webhook: url}, &out); err != nil {
		return err
	}
	if out.Item.ItemID == "" {
		return malformed(epItemWebhookUpdate)
	}
	return nil
}

var _ banklink.WebhookUpdater = (*Provider)(nil)
