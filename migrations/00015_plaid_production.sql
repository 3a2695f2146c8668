-- Plaid in production (issue 14): items completed after their exchange,
-- the webhook URL each item was given, the provider's own verification
-- facts of an account, and webhook kinds for every ITEM and AUTH code.

-- +goose Up

-- completion_pending: the exchange got a live token but a later read
-- (accounts, auth numbers) failed or was not ready; the item is kept and the
-- bank-item-completion job (or update mode) finishes it.
-- webhook_url: the webhook URL the provider was last given for the item (in
-- its link token, or by /item/webhook/update); NULL for items from before
-- this migration, which the bank-webhook-update job treats as differing.
ALTER TABLE items
    ADD COLUMN completion_pending boolean NOT NULL DEFAULT false,
    ADD COLUMN webhook_url text CHECK (length(webhook_url) <= 2048);

CREATE INDEX items_completion_pending ON items (updated_at) WHERE completion_pending AND status <> 'removed';

-- provider_verification_status: the provider's own word on how the
-- account's numbers were verified (Plaid's verification_status, such as
-- automatically_verified or pending_manual_verification); NULL where it gave
-- none. Only automatically_verified and manually_verified count as verified.
ALTER TABLE accounts
    ADD COLUMN provider_verification_status text CHECK (provider_verification_status ~ '^[a-z_]{1,64}$');

ALTER TABLE provider_webhook_events DROP CONSTRAINT provider_webhook_events_kind_check;
ALTER TABLE provider_webhook_events ADD CONSTRAINT provider_webhook_events_kind_check
    CHECK (kind ~ '^[a-z_]{1,64}$');

-- +goose Down
ALTER TABLE provider_webhook_events DROP CONSTRAINT provider_webhook_events_kind_check;
UPDATE provider_webhook_events SET kind = 'unknown'
    WHERE kind NOT IN ('login_required', 'revoked', 'account_revoked', 'new_accounts', 'unknown');
ALTER TABLE provider_webhook_events ADD CONSTRAINT provider_webhook_events_kind_check
    CHECK (kind IN ('login_required', 'revoked', 'account_revoked', 'new_accounts', 'unknown'));
ALTER TABLE accounts DROP COLUMN provider_verification_status;
DROP INDEX items_completion_pending;
ALTER TABLE items DROP COLUMN webhook_url, DROP COLUMN completion_pending;
