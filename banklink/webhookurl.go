package banklink

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/compliance"
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

// UpdateWebhooks tells the provider the configured webhook URL for every
// live item whose recorded URL differs (items from before the record count
// as differing), batch items at a time (default 100), recording each
// item's new URL with an audit entry as soon as the provider took it: a run
// cut short resumes where it stopped, and an item done is never asked
// again. Items the provider refuses are counted and left for the next run.
// Without a configured URL, or with a provider that has no webhook update,
// it does nothing.
func (s *Service) UpdateWebhooks(ctx context.Context, batch int) (WebhookUpdateResult, error) {
	var res WebhookUpdateResult
	up, ok := s.provider.(WebhookUpdater)
	if !ok || s.webhook == "" {
		return res, nil
	}
	if batch <= 0 {
		batch = defaultWebhookBatch
	}
	after := ""
	for {
		items, err := itemsWithOtherWebhook(ctx, s.db.Pool, s.provider.Name(), s.webhook, after, batch)
		if err != nil || len(items) == 0 {
			return res, err
		}
		for _, it := range items {
			after = it.ID
			err := s.updateWebhook(ctx, up, it)
			switch {
			case errors.Is(err, ErrWebhookUpdateUnsupported):
				return res, nil
			case err != nil:
				res.Failed++
				s.log.Warn("item webhook update failed", "item_id", it.ID, "code", kluis.ErrorCode(err))
			default:
				res.Updated++
			}
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
		}
	}
}

// updateWebhook points one item's webhooks at s.webhook and records it.
func (s *Service) updateWebhook(ctx context.Context, up WebhookUpdater, it Item) error {
	token, err := s.accessToken(ctx, it.CredentialRef)
	if err != nil {
		return err
	}
	if err := up.UpdateWebhook(ctx, token, s.webhook); err != nil {
		return err
	}
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		changed, err := setItemWebhook(ctx, tx, it.ID, s.webhook, s.now())
		if err != nil || !changed {
			return err
		}
		ext, err := externalSubject(ctx, tx, it.SubjectID)
		if err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, Actor{Kind: compliance.ActorSystem, Name: "webhook-update"}, "item.webhook_updated",
			it.ID, ext, map[string]any{"provider": it.Provider})
	})
}
