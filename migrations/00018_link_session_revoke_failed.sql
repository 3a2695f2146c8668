-- A provider token kluis could not store is revoked with retries while the
-- session's exchange lease is held; if the provider never confirmed it,
-- revoke_failed_at records that a token may still be live there that kluis
-- does not hold. Such a session counts as live for an erasure (which names
-- it among its unrevoked items) until the run is completed with exceptions.
-- The table is already readWrite for the serving role: no new grant.

-- +goose Up
ALTER TABLE link_sessions ADD COLUMN revoke_failed_at timestamptz;

-- +goose Down
ALTER TABLE link_sessions DROP COLUMN revoke_failed_at;
