-- Erasure fenced (issue 10): while a subject's approved erasure runs, nothing
-- new may be written for them, so that the run cannot miss what it must
-- revoke and destroy; and an erasure that a provider keeps refusing waits
-- for people in needs_attention instead of stalling.

-- +goose Up

-- erasing_since is set, under the subject's row lock, in the transaction
-- that approves an erasure (after it has checked the legal holds), and never
-- cleared: the run ends by deleting the row, so a returning user is a new
-- subject. erasure_request_id names the run that fences them.
ALTER TABLE subjects ADD COLUMN erasing_since timestamptz;
ALTER TABLE subjects ADD COLUMN erasure_request_id text;
ALTER TABLE subjects ADD CONSTRAINT subjects_erasing_named
    CHECK ((erasing_since IS NULL) = (erasure_request_id IS NULL));

-- The fence in the database, beneath every write path the application has or
-- will have: a row inserted for a subject whose erasure runs is refused
-- (SQLSTATE KLE01, which kluis answers 409 subject_erasing). FOR SHARE on the
-- subject's row conflicts with the approval's FOR UPDATE, so an insert and an
-- approval cannot pass each other: the insert commits first (and the run,
-- which starts after the approval commits, sees its row) or it waits for the
-- approval and is refused. Row locks need no more than the UPDATE the
-- serving role has on subjects.
-- +goose StatementBegin
CREATE FUNCTION subject_write_fence() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    since timestamptz;
BEGIN
    IF NEW.subject_id IS NULL THEN
        RETURN NEW;
    END IF;
    SELECT s.erasing_since INTO since FROM public.subjects s WHERE s.id = NEW.subject_id FOR SHARE;
    IF since IS NOT NULL THEN
        RAISE EXCEPTION 'subject_erasing' USING ERRCODE = 'KLE01',
            DETAIL = 'the subject''s erasure is running; nothing new may be written for them';
    END IF;
    RETURN NEW;
END $$;
-- +goose StatementEnd

-- Every table of the public schema that names a subject (the catalog erasure
-- deletes from) gets the fence. A later migration that adds such a table adds
-- the trigger too; compliance's TestEveryTableThatNamesASubjectIsFenced fails
-- until it does.
-- +goose StatementBegin
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN
        SELECT c.table_name FROM information_schema.columns c
        JOIN information_schema.tables tb ON tb.table_schema = c.table_schema AND tb.table_name = c.table_name
        WHERE c.table_schema = 'public' AND c.column_name = 'subject_id' AND tb.table_type = 'BASE TABLE'
        ORDER BY c.table_name
    LOOP
        EXECUTE format('CREATE TRIGGER subject_write_fence BEFORE INSERT ON public.%I
                        FOR EACH ROW EXECUTE FUNCTION subject_write_fence()', t);
    END LOOP;
END $$;
-- +goose StatementEnd

-- The erasure statuses (docs/COMPLIANCE.md, "The workflow").
-- needs_attention: the provider kept refusing to revoke;
-- completed_with_exceptions: two staff completed such a run (its receipt
-- names the items the provider did not revoke).
ALTER TABLE erasure_requests DROP CONSTRAINT IF EXISTS erasure_requests_status_check;
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_status_check CHECK (status IN (
    'pending_approval', 'rejected', 'cancelled', 'approved', 'needs_attention', 'completed', 'completed_with_exceptions'));
ALTER TABLE erasure_requests DROP CONSTRAINT IF EXISTS erasure_requests_check2;
ALTER TABLE erasure_requests DROP CONSTRAINT IF EXISTS erasure_requests_check3;
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_receipt_when_done
    CHECK ((status IN ('completed', 'completed_with_exceptions')) = (receipt IS NOT NULL));
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_subject_until_done
    CHECK ((status IN ('completed', 'completed_with_exceptions')) = (erased_subject_id IS NULL));

-- One run of a request at a time: the lease of the run that holds it
-- (compliance's claimRun). A run that died frees it when it lapses.
ALTER TABLE erasure_requests ADD COLUMN run_until timestamptz;

-- +goose Down
ALTER TABLE erasure_requests DROP COLUMN run_until;
ALTER TABLE erasure_requests DROP CONSTRAINT erasure_requests_subject_until_done;
ALTER TABLE erasure_requests DROP CONSTRAINT erasure_requests_receipt_when_done;
ALTER TABLE erasure_requests DROP CONSTRAINT erasure_requests_status_check;
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_status_check CHECK (status IN ('pending_approval', 'approved', 'completed'));
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_check2 CHECK ((status = 'completed') = (receipt IS NOT NULL));
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_check3 CHECK ((status = 'completed') = (erased_subject_id IS NULL));
-- +goose StatementBegin
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT event_object_table FROM information_schema.triggers
             WHERE trigger_schema = 'public' AND trigger_name = 'subject_write_fence'
    LOOP
        EXECUTE format('DROP TRIGGER subject_write_fence ON public.%I', t);
    END LOOP;
END $$;
-- +goose StatementEnd
DROP FUNCTION subject_write_fence();
ALTER TABLE subjects DROP CONSTRAINT subjects_erasing_named;
ALTER TABLE subjects DROP COLUMN erasure_request_id;
ALTER TABLE subjects DROP COLUMN erasing_since;
