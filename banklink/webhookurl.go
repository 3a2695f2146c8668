package banklink

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/vault"
)

// WebhookUpdater is a Provider that can point an existing item's webhooks
// at a new URL (Plaid's /item/webhook/update). Errors are Provider errors;
// ErrWebhookUpdateUnsupported from a wrapper whose provider cannot.
type WebhookUpdater interface {
	UpdateWebhook(ctx context.Context, accessToken, url string) error
}

// ErrWebhookUpdateUnsupported: the provider behind a wrapper has no
// webhook update (the sandbox, which needs none).
var ErrWebhookUpdateUnsupported = errors.New("banklink: the provider cannot update an item's webhook")

// defaultWebhookBatch is how many items one batch of UpdateWebhooks lists.
const defaultWebhookBatch = 100

// WebhookUpdateResult counts what UpdateWebhooks did.
type WebhookUpdateResult struct {
	Updated int
	Failed  int
}

// UpdateWebhooks tells each provider that supports it (WebhookUpdater) the
// configured webhook URL (its own, KLUIS_BANK_WEBHOOK_URL with the
// provider's name for "{provider}") for every live item of that provider
// whose recorded URL differs (items from before the record count as
// differing), batch items at a time (default 100), recording each item's
// new URL with an audit entry as soon as the provider took it: a run cut
// short resumes where it stopped, and an item done is never asked again.
// Items the provider refuses are counted and left for the next run.
// Without a configured URL it does nothing; a provider with no webhook
// update (the sandbox, which needs none) is skipped, and its items are
// never touched.
func (s *Service) UpdateWebhooks(ctx context.Context, batch int) (WebhookUpdateResult, error) {
	var res WebhookUpdateResult
	if s.webhook == "" {
		return res, nil
	}
	if batch <= 0 {
		batch = defaultWebhookBatch
	}
	for _, p := range s.providers {
		up, ok := p.(WebhookUpdater)
		if !ok {
			continue
		}
		if err := s.updateProviderWebhooks(ctx, p.Name(), up, batch, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// updateProviderWebhooks is UpdateWebhooks for the items of one provider.
func (s *Service) updateProviderWebhooks(ctx context.Context, provider string, up WebhookUpdater, batch int, res *WebhookUpdateResult) error {
	url := s.webhookURL(provider)
	after := ""
	for {
		items, err := itemsWithOtherWebhook(ctx, s.db.Pool, provider, url, after, batch)
		if err != nil || len(items) == 0 {
			return err
		}
		for _, it := range items {
			after = it.ID
			err := s.updateWebhook(ctx, up, it, url)
			switch {
			case errors.Is(err, ErrWebhookUpdateUnsupported):
				return nil
			case err != nil:
				res.Failed++
				s.log.Warn("item webhook update failed", "item_id", it.ID, "provider", provider, "code", kluis.ErrorCode(err))
			default:
				res.Updated++
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
}

// updateWebhook points one item's webhooks at url and records it.
func (s *Service) updateWebhook(ctx context.Context, up WebhookUpdater, it Item, url string) error {
	token, err := s.accessToken(ctx, it.ID, it.CredentialRef)
	if err != nil {
		return err
	}
	if err := up.UpdateWebhook(ctx, token, url); err != nil {
		return err
	}
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		changed, err := setItemWebhook(ctx, tx, it.ID, url, s.now())
		if err != nil || !changed {
			return err
		}
		ext, err := vault.SubjectKey(ctx, tx, it.SubjectID)
		if err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, audit.Actor{Kind: audit.ActorSystem, Name: "webhook-update"}, "item.webhook_updated",
			it.ID, ext, map[string]any{"provider": it.Provider})
	})
}
