-- Idempotency keys (docs/SECURITY.md, "Idempotency-Key": every POST takes an optional one).

-- +goose Up

-- One row per (caller, key). The caller and the key are stored only as
-- hashes: scope_hash is a keyed pseudonym of the caller (user, service or
-- staff member), key_hash a SHA-256 of the client's key. fingerprint is a
-- SHA-256 of the method, route, path parameters and body, so that the same
-- key with another request is told apart. The first request holds the row
-- 'in_progress' (with a lock token and a time after which a crashed holder's
-- claim lapses); its answer is then stored 'done' and replayed. The stored
-- answer (headers and body) is sealed (AES-256-GCM) under a key derived from
-- the client's raw key and a system key, neither of which is in this table.
CREATE TABLE idempotency_keys (
    scope_hash       bytea NOT NULL,
    key_hash         bytea NOT NULL,
    fingerprint      bytea NOT NULL,
    status           text NOT NULL CHECK (status IN ('in_progress', 'done')),
    lock_token       bytea NOT NULL,
    locked_until     timestamptz NOT NULL,
    response_status  integer,
    response_body    bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (scope_hash, key_hash),
    CHECK (status = 'in_progress' OR response_status IS NOT NULL)
);
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);

-- +goose Down
DROP TABLE idempotency_keys;
