-- Retention of people (issue 18): a subject who has not used kluis for
-- KLUIS_RETENTION_DORMANT_SUBJECTS is erased by the retention job through the
-- erasure pipeline. last_seen_at is when the user last called kluis with
-- their token (updated at most hourly, so it costs no write per request);
-- reveals and links are read from the audit log, which must therefore keep
-- entries at least as long as the dormancy period (config checks it).

-- +goose Up
ALTER TABLE subjects ADD COLUMN last_seen_at timestamptz NOT NULL DEFAULT now();
UPDATE subjects SET last_seen_at = created_at;
CREATE INDEX subjects_last_seen ON subjects (last_seen_at) WHERE erasing_since IS NULL;

-- +goose Down
DROP INDEX subjects_last_seen;
ALTER TABLE subjects DROP COLUMN last_seen_at;
