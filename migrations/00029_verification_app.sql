-- The app of a verification (issue 12: no SQL names another package's
-- tables). The velocity limit counts an account number's failed and open
-- verifications across the users of one app (docs/SECURITY.md,
-- "Verification limits"); until now it asked the vault's subjects table
-- which app each counted row's subject is in. Each row now records its
-- subject's app, written when the verification starts (the vault answers
-- for the subject, vault.SubjectApp) and copied into its failure row, so
-- that verification's queries read only verification's tables. A subject's
-- app never changes, so the copy cannot go stale. No table is added: the
-- serving role's grants are unchanged (migrations.ServingGrants).

-- +goose Up
ALTER TABLE verifications ADD COLUMN app_id text
    CHECK (app_id ~ '^[a-z][a-z0-9_-]{0,62}$');
UPDATE verifications v SET app_id = s.app_id FROM subjects s WHERE s.id = v.subject_id;
ALTER TABLE verifications ALTER COLUMN app_id SET NOT NULL;

ALTER TABLE verification_failures ADD COLUMN app_id text
    CHECK (app_id ~ '^[a-z][a-z0-9_-]{0,62}$');
UPDATE verification_failures f SET app_id = s.app_id FROM subjects s WHERE s.id = f.subject_id;
ALTER TABLE verification_failures ALTER COLUMN app_id SET NOT NULL;

-- During a rolling upgrade, instances of the release before this one still
-- insert rows without an app_id; NOT NULL would refuse them (a failed
-- verification start, and a last wrong guess whose failure row cannot be
-- written rolling back the attempt it spent). Until every instance runs
-- this release, such a row takes its subject's app here. The trigger can
-- go in a later release.
-- +goose StatementBegin
CREATE FUNCTION verification_app_default() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.app_id IS NULL THEN
        SELECT s.app_id INTO NEW.app_id FROM subjects s WHERE s.id = NEW.subject_id;
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER verifications_app_default BEFORE INSERT ON verifications
    FOR EACH ROW EXECUTE FUNCTION verification_app_default();
CREATE TRIGGER verification_failures_app_default BEFORE INSERT ON verification_failures
    FOR EACH ROW EXECUTE FUNCTION verification_app_default();

-- The limits find a number's rows within one app by these.
DROP INDEX verifications_open_number;
CREATE INDEX verifications_open_number ON verifications (app_id, number_index)
    WHERE number_index IS NOT NULL AND status IN ('pending', 'sent', 'posted');
DROP INDEX verification_failures_number;
CREATE INDEX verification_failures_number ON verification_failures (app_id, number_index, failed_at)
    WHERE number_index IS NOT NULL;

-- +goose Down
DROP TRIGGER verification_failures_app_default ON verification_failures;
DROP TRIGGER verifications_app_default ON verifications;
DROP FUNCTION verification_app_default();
DROP INDEX verification_failures_number;
CREATE INDEX verification_failures_number ON verification_failures (number_index, failed_at)
    WHERE number_index IS NOT NULL;
DROP INDEX verifications_open_number;
CREATE INDEX verifications_open_number ON verifications (number_index)
    WHERE number_index IS NOT NULL AND status IN ('pending', 'sent', 'posted');
ALTER TABLE verification_failures DROP COLUMN app_id;
ALTER TABLE verifications DROP COLUMN app_id;
