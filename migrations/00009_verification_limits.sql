-- Verification limits (docs/SECURITY.md, "Verification limits") and keyed
-- Idempotency-Key fingerprints (docs/SECURITY.md).

-- +goose Up

-- Rows of idempotency_keys made before this migration hold unkeyed SHA-256
-- fingerprints of their requests: with an account's mask, the fingerprint
-- of a POST /v1/accounts gives its full account number by brute force.
-- kluis now keys every hash of that table under the `idempotency` system
-- key (labels v2), so no old row would ever match a new request again; they
-- are deleted here rather than left to expire, so the leak ends with the
-- upgrade. A request retried across the upgrade runs again instead of
-- replaying (the routes that create are idempotent by themselves, or
-- answer 409 for the duplicate).
DELETE FROM idempotency_keys;

-- The blind index (credentials.blind_index: a keyed HMAC) of the account
-- number a verification is about, copied when it starts, so that the
-- limits per account number count without reading the vault's table.
ALTER TABLE verifications ADD COLUMN number_index bytea
    CHECK (number_index IS NULL OR length(number_index) = 32);
UPDATE verifications v SET number_index = c.blind_index
  FROM accounts a JOIN credentials c ON c.ref = a.account_number_ref
 WHERE a.id = v.account_id AND v.status IN ('pending', 'sent', 'posted');
CREATE INDEX verifications_open_number ON verifications (number_index)
    WHERE number_index IS NOT NULL AND status IN ('pending', 'sent', 'posted');

-- One row per failed verification (its answers used up, or the bank
-- refuted the details), kept for KLUIS_VERIFICATION_LOCKOUT at least
-- (retention class verification_failures): two failures lock the account
-- (and the user's other accounts of the same number); failures of one
-- account number across users rate-limit new verifications of it. No
-- foreign key to verifications or accounts: a failure must outlive their
-- purge. subject_id makes erasure take the rows with the subject.
CREATE TABLE verification_failures (
    verification_id text PRIMARY KEY CHECK (verification_id LIKE 'ver\_%'),
    subject_id      text NOT NULL REFERENCES subjects (id),
    account_id      text NOT NULL,
    number_index    bytea CHECK (number_index IS NULL OR length(number_index) = 32),
    failed_at       timestamptz NOT NULL
);
CREATE INDEX verification_failures_account ON verification_failures (account_id, failed_at);
CREATE INDEX verification_failures_number ON verification_failures (number_index, failed_at)
    WHERE number_index IS NOT NULL;
CREATE INDEX verification_failures_subject ON verification_failures (subject_id, number_index);

-- Failures before this migration count too: an attack under way does not
-- start afresh with the upgrade.
INSERT INTO verification_failures (verification_id, subject_id, account_id, number_index, failed_at)
SELECT v.id, v.subject_id, v.account_id,
       (SELECT c.blind_index FROM accounts a JOIN credentials c ON c.ref = a.account_number_ref WHERE a.id = v.account_id),
       coalesce(v.finished_at, v.updated_at)
  FROM verifications v WHERE v.status = 'failed';

-- +goose Down
DROP TABLE verification_failures;
DROP INDEX verifications_open_number;
ALTER TABLE verifications DROP COLUMN number_index;
