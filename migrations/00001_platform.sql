-- The platform: the audit chain and the record of scheduled job runs.

-- +goose Up

-- Audit entries are written concurrently, each in the transaction of the change
-- it records, and ordered by seq. They name people only by keyed pseudonyms and
-- never carry a secret. The sealer chains them afterwards (audit_chain), so no
-- request waits on a global lock for the chain's head.
CREATE TABLE audit_entries (
    seq               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at       timestamptz NOT NULL,
    actor_kind        text NOT NULL CHECK (actor_kind IN ('user', 'service', 'staff', 'system', 'provider', 'anonymous')),
    actor             text NOT NULL,
    action            text NOT NULL,
    target            text NOT NULL DEFAULT '',
    outcome           text NOT NULL CHECK (outcome IN ('success', 'denied', 'failure')),
    subject_pseudonym text,
    request_id        text NOT NULL DEFAULT '',
    details           jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_entries_subject ON audit_entries (subject_pseudonym) WHERE subject_pseudonym IS NOT NULL;
CREATE INDEX audit_entries_occurred_at ON audit_entries (occurred_at);

-- The chain: one row per sealed entry, in the order the sealer saw them. Each
-- hash covers the entry's fields and the previous hash.
CREATE TABLE audit_chain (
    pos        bigint PRIMARY KEY,
    entry_seq  bigint NOT NULL UNIQUE REFERENCES audit_entries (seq),
    prev_hash  bytea NOT NULL,
    hash       bytea NOT NULL,
    sealed_at  timestamptz NOT NULL
);

-- Entries not yet sealed. A trigger fills it with each new entry, in the
-- entry's own transaction; the sealer empties it. No foreign key: only the
-- trigger writes here, and a check per insert would sit on every request's
-- path.
CREATE TABLE audit_pending (
    seq bigint PRIMARY KEY
);

-- +goose StatementBegin
CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION audit_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_pending (seq) VALUES (NEW.seq);
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_entries_enqueue AFTER INSERT ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_enqueue();

-- One row per run of a scheduled job: who ran it, when, how it ended, and what
-- it counted. error holds a safe message only.
CREATE TABLE job_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         text NOT NULL,
    instance    text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    outcome     text NOT NULL DEFAULT 'running' CHECK (outcome IN ('running', 'succeeded', 'failed')),
    counts      jsonb NOT NULL DEFAULT '{}'::jsonb,
    error       text NOT NULL DEFAULT ''
);
CREATE INDEX job_runs_job_started ON job_runs (job, started_at DESC);

-- +goose Down
DROP TABLE job_runs;
DROP TABLE audit_pending;
DROP TABLE audit_chain;
DROP TABLE audit_entries;
DROP FUNCTION audit_enqueue();
DROP FUNCTION audit_refuse_change();
