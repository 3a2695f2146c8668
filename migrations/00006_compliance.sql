-- Compliance: legal holds, erasure requests and their receipts, and the audit
-- checkpoints that let retention purge the oldest audit entries while the
-- chain still verifies.
--
-- None of these tables has a column called subject_id on purpose: erasure
-- deletes the rows of every public table with a subject_id column (found in
-- the catalog, so a new feature table cannot be missed), and these records
-- must outlive the subject. They name the subject by its audit pseudonym
-- (a keyed HMAC of the external id), and by its internal id only while the
-- subject exists.

-- +goose Up

-- A legal hold keeps a subject's data: erasure is refused and retention skips
-- their rows until it is lifted. Lifting keeps the row (who, when); once the
-- subject is erased the internal id goes (ON DELETE SET NULL) and only the
-- pseudonym remains. reason is a reference (a case or ticket number), never a
-- narrative about the person.
CREATE TABLE legal_holds (
    id                text PRIMARY KEY CHECK (id LIKE 'hold\_%'),
    held_subject_id   text REFERENCES subjects (id) ON DELETE SET NULL,
    subject_pseudonym text NOT NULL,
    reason            text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL,
    lifted_by         text,
    lifted_at         timestamptz,
    CHECK ((lifted_at IS NULL) = (lifted_by IS NULL)),
    CHECK (lifted_at IS NOT NULL OR held_subject_id IS NOT NULL)
);
CREATE INDEX legal_holds_active ON legal_holds (held_subject_id) WHERE lifted_at IS NULL;

-- An erasure request: one staff member requests, another approves, and kluis
-- carries it out in recorded steps (steps) so that a run cut short resumes
-- where it stopped. erased_subject_id is the internal id while the request is
-- open and NULL once it completes; the receipt names the subject only by
-- pseudonym and holds counts, times and staff ids.
CREATE TABLE erasure_requests (
    id                text PRIMARY KEY CHECK (id LIKE 'era\_%'),
    erased_subject_id text,
    subject_pseudonym text NOT NULL,
    reason            text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    status            text NOT NULL CHECK (status IN ('pending_approval', 'approved', 'completed')),
    requested_by      text NOT NULL,
    requested_at      timestamptz NOT NULL,
    approved_by       text,
    approved_at       timestamptz,
    completed_at      timestamptz,
    steps             jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_error        text NOT NULL DEFAULT '',
    receipt           jsonb,
    CHECK (approved_by IS NULL OR approved_by <> requested_by),
    CHECK ((status = 'pending_approval') = (approved_by IS NULL)),
    CHECK ((status = 'completed') = (receipt IS NOT NULL)),
    CHECK ((status = 'completed') = (erased_subject_id IS NULL))
);
-- One open request per subject.
CREATE UNIQUE INDEX erasure_requests_open ON erasure_requests (erased_subject_id) WHERE status <> 'completed';
CREATE INDEX erasure_requests_approved ON erasure_requests (approved_at) WHERE status = 'approved';

-- A checkpoint stands in for the purged head of the audit chain: the position
-- and hash of the last link purged. Verify starts from the newest one. Rows
-- are checked as they are written (the link must exist with that hash, and be
-- at least a year old, PCI DSS 10.5.1) and never change.
CREATE TABLE audit_checkpoints (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pos          bigint NOT NULL UNIQUE,
    hash         bytea NOT NULL,
    entry_seq    bigint NOT NULL,
    occurred_at  timestamptz NOT NULL,
    purged       bigint NOT NULL CHECK (purged >= 0),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- +goose StatementBegin
CREATE FUNCTION audit_checkpoint_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    link_hash bytea;
    link_seq  bigint;
    entry_at  timestamptz;
BEGIN
    IF EXISTS (SELECT 1 FROM audit_checkpoints WHERE pos >= NEW.pos) THEN
        RAISE EXCEPTION 'audit checkpoint at % does not move forward', NEW.pos USING ERRCODE = 'check_violation';
    END IF;
    SELECT c.hash, c.entry_seq, e.occurred_at INTO link_hash, link_seq, entry_at
        FROM audit_chain c JOIN audit_entries e ON e.seq = c.entry_seq WHERE c.pos = NEW.pos;
    IF link_hash IS NULL OR link_hash <> NEW.hash OR link_seq <> NEW.entry_seq OR entry_at <> NEW.occurred_at THEN
        RAISE EXCEPTION 'audit checkpoint at % does not match the chain', NEW.pos USING ERRCODE = 'check_violation';
    END IF;
    IF entry_at > now() - interval '365 days' THEN
        RAISE EXCEPTION 'audit entries are kept at least 365 days' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

-- A chain link may be deleted only when a checkpoint covers it.
-- +goose StatementBegin
CREATE FUNCTION audit_chain_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.pos <= (SELECT coalesce(max(pos), 0) FROM audit_checkpoints) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd

-- An entry may be deleted only once its link is gone (which needs a
-- checkpoint) and it is not waiting to be sealed: every entry is either
-- pending or linked until a checkpointed purge removes its link.
-- +goose StatementBegin
CREATE FUNCTION audit_entries_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND EXISTS (SELECT 1 FROM audit_checkpoints)
       AND NOT EXISTS (SELECT 1 FROM audit_chain WHERE entry_seq = OLD.seq)
       AND NOT EXISTS (SELECT 1 FROM audit_pending WHERE seq = OLD.seq) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd

CREATE TRIGGER audit_checkpoints_check BEFORE INSERT ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoint_check();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

DROP TRIGGER audit_chain_append_only ON audit_chain;
CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_chain_guard();
DROP TRIGGER audit_entries_append_only ON audit_entries;
CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_entries_guard();

-- Subject export finds the entries a user made, as well as those about them.
CREATE INDEX audit_entries_user_actor ON audit_entries (actor) WHERE actor_kind = 'user';

-- Retention finds job runs by age.
CREATE INDEX IF NOT EXISTS job_runs_finished ON job_runs (finished_at) WHERE finished_at IS NOT NULL;

-- +goose Down
DROP INDEX IF EXISTS job_runs_finished;
DROP INDEX IF EXISTS audit_entries_user_actor;
DROP TRIGGER audit_entries_append_only ON audit_entries;
CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
DROP TRIGGER audit_chain_append_only ON audit_chain;
CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
DROP TABLE audit_checkpoints;
DROP FUNCTION audit_entries_guard();
DROP FUNCTION audit_chain_guard();
DROP FUNCTION audit_checkpoint_check();
DROP TABLE erasure_requests;
DROP TABLE legal_holds;
