-- Account verification (instant and micro-deposits), the sandbox rail's own
-- state, and the outbox of event webhooks to client apps. No amount, code or
-- account number is stored in the clear: verifications keep only a keyed
-- HMAC of the answer; the sandbox rail (the "bank") keeps its deposits
-- sealed under a key derived from the verification system key.

-- +goose Up

-- One verification of one account. method is what was actually done
-- (instant or micro_deposits); requested_method is what the app asked for
-- (auto picks). answer_mac is HMAC-SHA256 under the verification system key
-- of the verification id and the normalized answer (amounts sorted, or the
-- code), so a copy of the table proves nothing and cannot be replayed on
-- another verification. attempts_remaining never goes below zero.
CREATE TABLE verifications (
    id                 text PRIMARY KEY CHECK (id LIKE 'ver\_%'),
    subject_id         text NOT NULL REFERENCES subjects (id),
    account_id         text NOT NULL REFERENCES accounts (id),
    requested_method   text NOT NULL CHECK (requested_method IN ('auto', 'instant', 'micro_deposits')),
    method             text NOT NULL CHECK (method IN ('instant', 'micro_deposits')),
    answer_kind        text CHECK (answer_kind IN ('amounts', 'code')),
    status             text NOT NULL CHECK (status IN ('pending', 'sent', 'posted', 'verified', 'failed', 'expired', 'returned')),
    attempts_remaining integer NOT NULL CHECK (attempts_remaining >= 0),
    answer_mac         bytea CHECK (answer_mac IS NULL OR length(answer_mac) = 32),
    rail               text,
    rail_ref           text,
    expires_at         timestamptz NOT NULL,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    posted_at          timestamptz,
    finished_at        timestamptz,
    CHECK ((method = 'micro_deposits') = (answer_kind IS NOT NULL)),
    CHECK (status NOT IN ('sent', 'posted') OR rail_ref IS NOT NULL)
);
-- At most one open verification per account: a second request while one
-- runs is a conflict rather than a second pair of deposits.
CREATE UNIQUE INDEX verifications_one_open ON verifications (account_id) WHERE status IN ('pending', 'sent', 'posted');
CREATE INDEX verifications_subject ON verifications (subject_id, created_at);
CREATE INDEX verifications_open_expiry ON verifications (expires_at) WHERE status IN ('pending', 'sent', 'posted');
CREATE INDEX verifications_in_flight ON verifications (updated_at) WHERE status IN ('pending', 'sent');

-- The sandbox rail's deposits (used only with KLUIS_BANK_PROVIDER=sandbox).
-- sealed is AES-256-GCM of the deposits under a key derived from the
-- verification system key, bound to the verification id: the sandbox
-- deposits route opens it; a database copy cannot.
CREATE TABLE sandbox_rail_deposits (
    ref             text PRIMARY KEY,
    verification_id text NOT NULL UNIQUE,
    sealed          bytea NOT NULL,
    post_at         timestamptz NOT NULL,
    returned        boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Events for client apps, written in the same transaction as the change
-- they announce. payload is the exact body delivered (ids and statuses
-- only). fanned_out says whether delivery rows exist for the endpoints
-- configured when the worker first saw the event.
CREATE TABLE outbox (
    id         text PRIMARY KEY CHECK (id LIKE 'evt\_%'),
    type       text NOT NULL CHECK (type ~ '^[a-z_]+\.[a-z_]+$'),
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    fanned_out boolean NOT NULL DEFAULT false
);
CREATE INDEX outbox_unfanned ON outbox (created_at) WHERE NOT fanned_out;

-- One row per event and endpoint: where its delivery stands. endpoint_id is
-- a hash of the configured URL (which may carry a token in its query, so it
-- is not stored); endpoint is the URL without userinfo or query, for people.
-- next_attempt_at doubles as a lease: a worker claims a row by moving it
-- into the future, so a worker that dies mid-delivery frees it by itself.
CREATE TABLE outbox_targets (
    event_id        text NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    endpoint_id     text NOT NULL,
    endpoint        text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    delivered_at    timestamptz,
    PRIMARY KEY (event_id, endpoint_id)
);
CREATE INDEX outbox_targets_due ON outbox_targets (next_attempt_at) WHERE status = 'pending';

-- Every delivery attempt, delivered or not.
CREATE TABLE outbox_deliveries (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     text NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    endpoint_id  text NOT NULL,
    attempt      integer NOT NULL,
    attempted_at timestamptz NOT NULL,
    status_code  integer,
    outcome      text NOT NULL CHECK (outcome IN ('delivered', 'failed')),
    error        text NOT NULL DEFAULT '',
    duration_ms  integer NOT NULL DEFAULT 0
);
CREATE INDEX outbox_deliveries_event ON outbox_deliveries (event_id, attempted_at);

-- +goose Down
DROP TABLE outbox_deliveries;
DROP TABLE outbox_targets;
DROP TABLE outbox;
DROP TABLE sandbox_rail_deposits;
DROP TABLE verifications;
