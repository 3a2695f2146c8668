package banklink

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/events"
	"github.com/kluis-dev/kluis/vault"
)

// Plaid's verification_status values that webhooks set on an account.
const (
	providerAutomaticallyVerified = "automatically_verified"
	providerVerificationExpired   = "verification_expired"
	providerVerificationFailed    = "verification_failed"
)

// applyStateWebhook applies the webhook kinds of issue 14 as idempotent
// state transitions (the same event applied to an item already in its
// state does nothing) and reports whether ev was one of them.
func (s *Service) applyStateWebhook(ctx context.Context, tx pgx.Tx, actor audit.Actor, ev WebhookEvent, it Item) (string, bool, error) {
	switch ev.Kind {
	case EventLoginRepaired:
		out, err := s.transitionItem(ctx, tx, actor, ev, it, ItemEventLoginRepaired, "item.login_repaired", events.ItemRepaired)
		return out, true, err
	case EventItemError, EventWebhookUpdated:
		// Recorded with the provider's code, deliberately changing nothing.
		return WebhookIgnored, true, nil
	case EventAuthVerified, EventAuthExpired, EventAuthFailed:
		out, err := s.applyAuthWebhook(ctx, tx, actor, ev, it)
		return out, true, err
	}
	return "", false, nil
}

// transitionItem moves the item as the machine says for itemEv, with its
// audit entry and the apps' event (eventType, when set), or does nothing
// (WebhookNoChange) when the item's status does not take itemEv.
func (s *Service) transitionItem(ctx context.Context, tx pgx.Tx, actor audit.Actor, ev WebhookEvent, it Item, itemEv ItemEvent, action, eventType string) (string, error) {
	to, changed, err := setItemStatus(ctx, tx, it.ID, itemEv, s.now())
	if err != nil || !changed {
		return WebhookNoChange, err
	}
	ext, err := vault.SubjectKey(ctx, tx, it.SubjectID)
	if err != nil {
		return "", err
	}
	if eventType != "" {
		if err := itemEvent(ctx, tx, eventType, it.SubjectID, it.ID, to); err != nil {
			return "", err
		}
	}
	return WebhookApplied, s.appendAudit(ctx, tx, actor, action, it.ID, ext, map[string]any{
		"from": it.Status, "to": to, "event_id": ev.ID, "provider_code": clip(ev.ProviderCode)})
}

// applyAuthWebhook records the provider's verdict on one account's
// micro-deposits and moves the account's verification with it (verified,
// expired, failed: AccountVerifications): a verified account also marks
// the item for completion (its numbers can be read now). The same verdict
// again changes nothing.
func (s *Service) applyAuthWebhook(ctx context.Context, tx pgx.Tx, actor audit.Actor, ev WebhookEvent, it Item) (string, error) {
	status := ev.VerificationStatus
	if status == "" {
		status = map[string]string{EventAuthVerified: providerAutomaticallyVerified, EventAuthExpired: providerVerificationExpired,
			EventAuthFailed: providerVerificationFailed}[ev.Kind]
	}
	accountID, changed, err := setProviderVerification(ctx, tx, it.ID, ev.ProviderAccountID, status, s.now())
	if err != nil || !changed {
		return WebhookNoChange, err
	}
	if ev.Kind == EventAuthVerified {
		if err := markCompletionPending(ctx, tx, it.ID, s.now()); err != nil {
			return "", err
		}
	}
	// The account's verification moves in this transaction: verified,
	// expired or failed as the provider says.
	if err := s.reportProviderStatus(ctx, tx, it.Provider, accountID, status); err != nil {
		return "", err
	}
	ext, err := vault.SubjectKey(ctx, tx, it.SubjectID)
	if err != nil {
		return "", err
	}
	return WebhookApplied, s.appendAudit(ctx, tx, actor, "account.provider_verification", accountID, ext, map[string]any{
		"item_id": it.ID, "provider_verification_status": status, "event_id": ev.ID})
}

// setProviderVerification records the provider's verification status of
// the item's live account, unless it is that already.
func setProviderVerification(ctx context.Context, tx pgx.Tx, itemID, providerAccountID, status string, now time.Time) (string, bool, error) {
	var id string
	err := tx.QueryRow(ctx, `UPDATE accounts SET provider_verification_status = $3, updated_at = $4
		WHERE item_id = $1 AND provider_account_id = $2 AND removed_at IS NULL AND status = 'active'
		  AND provider_verification_status IS DISTINCT FROM $3
		RETURNING id`, itemID, providerAccountID, status, now).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, dbErr("record provider verification", err)
	}
	return id, true, nil
}

// markCompletionPending has the completion job read the item again.
func markCompletionPending(ctx context.Context, tx pgx.Tx, id string, now time.Time) error {
	if _, err := tx.Exec(ctx, `UPDATE items SET completion_pending = true, updated_at = $2 WHERE id = $1 AND status <> 'removed'`, id, now); err != nil {
		return dbErr("mark item for completion", err)
	}
	return nil
}
