-- Stored idempotent answers of a user's requests name the subject (internal
-- id), so that erasure, which deletes every row of every table with a
-- subject_id column, deletes them too: a stored answer (an item, a link
-- token) must not outlive the person's erasure.

-- +goose Up
ALTER TABLE idempotency_keys ADD COLUMN subject_id text REFERENCES subjects (id);
CREATE INDEX idempotency_keys_subject ON idempotency_keys (subject_id) WHERE subject_id IS NOT NULL;

-- +goose Down
DROP INDEX idempotency_keys_subject;
ALTER TABLE idempotency_keys DROP COLUMN subject_id;
