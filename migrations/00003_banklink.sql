-- Bank linking: link sessions, items, accounts, provider webhook events, and
-- the sandbox provider's own state. Secrets live only in credentials (sealed);
-- these tables hold references to them, and hashes of single-use tokens.

-- +goose Up

-- A link session is one run of the provider's Link UI for a subject: a new
-- item, or update mode to repair an existing item's login. The link token is
-- returned once and never stored; the public token is kept only as a keyed
-- HMAC (public_token_hash), so a database copy cannot replay it.
-- exchange_claimed_until is a short lease: the one exchange that holds it
-- talks to the provider; concurrent exchanges of the same token wait for it.
CREATE TABLE link_sessions (
    id                     text PRIMARY KEY CHECK (id LIKE 'lks\_%'),
    subject_id             text NOT NULL REFERENCES subjects (id),
    provider               text NOT NULL,
    mode                   text NOT NULL CHECK (mode IN ('new', 'update')),
    item_id                text,
    status                 text NOT NULL CHECK (status IN ('created', 'succeeded', 'exchanged', 'expired', 'exited')),
    products               text[] NOT NULL DEFAULT '{}',
    public_token_hash      bytea CHECK (public_token_hash IS NULL OR length(public_token_hash) = 32),
    exchange_claimed_until timestamptz,
    exchanged_item_id      text,
    expires_at             timestamptz NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK ((mode = 'update') = (item_id IS NOT NULL)),
    CHECK (status <> 'succeeded' OR public_token_hash IS NOT NULL),
    CHECK (status <> 'exchanged' OR exchanged_item_id IS NOT NULL)
);
CREATE INDEX link_sessions_subject ON link_sessions (subject_id, created_at);
CREATE INDEX link_sessions_open ON link_sessions (expires_at) WHERE status IN ('created', 'succeeded');

-- An item is one login at one institution. credential_ref is the sealed
-- access token ({"access_token", "provider"}); it is NULL once the item is
-- removed (the credential destroyed). pending_credential_ref holds a rotated
-- token that is sealed but not yet switched to, so that a rotation cut short
-- after the provider answered can be finished without the provider.
CREATE TABLE items (
    id                      text PRIMARY KEY CHECK (id LIKE 'itm\_%'),
    subject_id              text NOT NULL REFERENCES subjects (id),
    provider                text NOT NULL,
    provider_item_id        text NOT NULL,
    institution_id          text NOT NULL,
    institution_name        text NOT NULL,
    status                  text NOT NULL CHECK (status IN ('active', 'login_required', 'revoked', 'removed')),
    credential_ref          text REFERENCES credentials (ref),
    pending_credential_ref  text REFERENCES credentials (ref),
    access_token_rotated_at timestamptz NOT NULL DEFAULT now(),
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    removed_at              timestamptz,
    UNIQUE (provider, provider_item_id),
    CHECK ((status = 'removed') = (credential_ref IS NULL)),
    CHECK ((status = 'removed') = (removed_at IS NOT NULL))
);
CREATE INDEX items_subject ON items (subject_id, created_at);
CREATE INDEX items_rotation ON items (access_token_rotated_at) WHERE status <> 'removed';

ALTER TABLE link_sessions ADD FOREIGN KEY (item_id) REFERENCES items (id);
ALTER TABLE link_sessions ADD FOREIGN KEY (exchanged_item_id) REFERENCES items (id);

-- An account belongs to a subject, and to an item when it was linked through
-- a provider; manual accounts (entered by hand) have no item. The full
-- account and routing numbers are sealed (account_number_ref, with the
-- credential's blind index); only the mask stays here.
CREATE TABLE accounts (
    id                  text PRIMARY KEY CHECK (id LIKE 'acc\_%'),
    subject_id          text NOT NULL REFERENCES subjects (id),
    item_id             text REFERENCES items (id),
    provider_account_id text,
    name                text NOT NULL DEFAULT '',
    mask                text NOT NULL DEFAULT '' CHECK (mask ~ '^[0-9]{0,4}$'),
    type                text NOT NULL DEFAULT '',
    subtype             text NOT NULL DEFAULT '',
    verification_status text NOT NULL DEFAULT 'unverified',
    account_number_ref  text REFERENCES credentials (ref),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    removed_at          timestamptz,
    CHECK ((item_id IS NULL) = (provider_account_id IS NULL)),
    UNIQUE (item_id, provider_account_id)
);
CREATE INDEX accounts_subject ON accounts (subject_id, created_at);
CREATE INDEX accounts_item ON accounts (item_id) WHERE item_id IS NOT NULL;

-- Every verified provider webhook, once: (provider, event_id) dedupes
-- retries. item_id is kluis's item when the event named a known one;
-- outcome says what kluis did with it.
CREATE TABLE provider_webhook_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider         text NOT NULL,
    event_id         text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 128),
    kind             text NOT NULL CHECK (kind IN ('login_required', 'revoked', 'new_accounts', 'unknown')),
    provider_type    text NOT NULL DEFAULT '',
    provider_code    text NOT NULL DEFAULT '',
    provider_item_id text NOT NULL DEFAULT '',
    item_id          text REFERENCES items (id),
    outcome          text NOT NULL CHECK (outcome IN ('applied', 'no_change', 'ignored', 'unknown_item')),
    received_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, event_id)
);
CREATE INDEX provider_webhook_events_received ON provider_webhook_events (received_at);

-- The sandbox provider's own state (used only with KLUIS_BANK_PROVIDER=sandbox),
-- kept here so that it is shared by every instance and survives restarts.
-- Tokens are random and stored only as SHA-256 hashes; account numbers are
-- derived from a key, never stored.
CREATE TABLE sandbox_items (
    provider_item_id  text PRIMARY KEY,
    institution_id    text NOT NULL,
    access_token_hash bytea UNIQUE,
    login_required    boolean NOT NULL DEFAULT false,
    new_accounts      integer NOT NULL DEFAULT 0,
    removed_at        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sandbox_public_tokens (
    token_hash       bytea PRIMARY KEY,
    institution_id   text NOT NULL,
    provider_item_id text,
    expires_at       timestamptz NOT NULL,
    used_at          timestamptz
);

-- +goose Down
DROP TABLE sandbox_public_tokens;
DROP TABLE sandbox_items;
DROP TABLE provider_webhook_events;
DROP TABLE accounts;
ALTER TABLE link_sessions DROP CONSTRAINT IF EXISTS link_sessions_item_id_fkey;
ALTER TABLE link_sessions DROP CONSTRAINT IF EXISTS link_sessions_exchanged_item_id_fkey;
DROP TABLE items;
DROP TABLE link_sessions;
