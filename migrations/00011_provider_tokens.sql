-- Provider tokens that are never lost: a credential keeps one ref across
-- token rotation, with its versions behind it (the current envelope and, while
-- a rotation runs, a pending one sealed for the same ref); items that lost
-- their token (relink_required) and consent withdrawn at the provider
-- (revoked items and accounts, whose credentials stay only as tombstones that
-- answer 410).

-- +goose Up

-- version counts the secrets the ref has held (1 at sealing, +1 at each
-- rotation). pending_* is the successor sealed for the same ref, not yet
-- current: a rotation commits it before the old token is let go, and removal
-- revokes at the provider with it as well as with the current one.
-- revoked_at marks a tombstone: the secret destroyed (envelope, pending
-- version and blind index gone) because the owner withdrew consent at the
-- provider; the row stays so that its ref answers "revoked", not "unknown".
ALTER TABLE credentials
    ALTER COLUMN envelope DROP NOT NULL,
    ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    ADD COLUMN pending_envelope bytea,
    ADD COLUMN pending_key_version integer CHECK (pending_key_version >= 1),
    ADD COLUMN pending_since timestamptz,
    ADD COLUMN revoked_at timestamptz,
    ADD CONSTRAINT credentials_pending_whole CHECK (
        (pending_envelope IS NULL) = (pending_key_version IS NULL)
        AND (pending_envelope IS NULL) = (pending_since IS NULL)),
    ADD CONSTRAINT credentials_revoked_destroyed CHECK (
        (revoked_at IS NULL) = (envelope IS NOT NULL)
        AND (revoked_at IS NULL OR (pending_envelope IS NULL AND blind_index IS NULL)));

-- relink_required: kluis lost the provider's token (a rotation whose answer
-- never arrived); the user must link again. rotation_claimed_until is the
-- lease of the one rotation or removal that talks to the provider about the
-- item's token: a rotation cut short leaves it to expire, and the next run
-- finds out what the provider did.
ALTER TABLE items DROP CONSTRAINT items_status_check;
ALTER TABLE items
    ADD CONSTRAINT items_status_check
        CHECK (status IN ('active', 'login_required', 'relink_required', 'revoked', 'removed')),
    ADD COLUMN rotation_claimed_until timestamptz;

-- An account's own consent: revoked when the user withdrew access to it at
-- the provider (its number is then a tombstone and it is no longer verified).
ALTER TABLE accounts
    ADD COLUMN status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    ADD COLUMN revoked_at timestamptz,
    ADD CONSTRAINT accounts_revoked_at CHECK ((status = 'revoked') = (revoked_at IS NOT NULL));

ALTER TABLE provider_webhook_events DROP CONSTRAINT provider_webhook_events_kind_check;
ALTER TABLE provider_webhook_events ADD CONSTRAINT provider_webhook_events_kind_check
    CHECK (kind IN ('login_required', 'revoked', 'account_revoked', 'new_accounts', 'unknown'));

-- +goose Down
ALTER TABLE provider_webhook_events DROP CONSTRAINT provider_webhook_events_kind_check;
DELETE FROM provider_webhook_events WHERE kind = 'account_revoked';
ALTER TABLE provider_webhook_events ADD CONSTRAINT provider_webhook_events_kind_check
    CHECK (kind IN ('login_required', 'revoked', 'new_accounts', 'unknown'));
ALTER TABLE accounts DROP CONSTRAINT accounts_revoked_at, DROP COLUMN revoked_at, DROP COLUMN status;
ALTER TABLE items DROP CONSTRAINT items_status_check;
UPDATE items SET status = 'login_required' WHERE status = 'relink_required';
ALTER TABLE items DROP COLUMN rotation_claimed_until,
    ADD CONSTRAINT items_status_check CHECK (status IN ('active', 'login_required', 'revoked', 'removed'));
-- Tombstones have no secret to go back to; rows with a pending version keep
-- only the current one (a rotation the next run could not finish).
DELETE FROM credentials WHERE revoked_at IS NOT NULL
    AND ref NOT IN (SELECT credential_ref FROM items WHERE credential_ref IS NOT NULL)
    AND ref NOT IN (SELECT account_number_ref FROM accounts WHERE account_number_ref IS NOT NULL);
ALTER TABLE credentials DROP CONSTRAINT credentials_revoked_destroyed, DROP CONSTRAINT credentials_pending_whole,
    DROP COLUMN revoked_at, DROP COLUMN pending_since, DROP COLUMN pending_key_version,
    DROP COLUMN pending_envelope, DROP COLUMN version,
    ALTER COLUMN envelope SET NOT NULL;
