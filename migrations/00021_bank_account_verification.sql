-- Bank account verification (issue 15; README, `KLUIS_BAV_REQUIRED_CHECKS`): a
-- verification of method bank_account_verification asks the bank, through
-- a verifier (Stitch's verifyBankAccountDetails, or the sandbox's), whether
-- the account exists, is open, takes debits and credits, and whether the
-- holder's ID number and name match. It stays pending (rail = the
-- verifier, rail_ref = the verifier's id for it) until the bank answers,
-- then becomes verified or failed; checks keeps the answer: each check
-- true, false or null (unknown). No personal data is in it.

-- +goose Up
ALTER TABLE verifications DROP CONSTRAINT verifications_requested_method_check;
ALTER TABLE verifications ADD CONSTRAINT verifications_requested_method_check
    CHECK (requested_method IN ('auto', 'instant', 'micro_deposits', 'bank_account_verification'));
ALTER TABLE verifications DROP CONSTRAINT verifications_method_check;
ALTER TABLE verifications ADD CONSTRAINT verifications_method_check
    CHECK (method IN ('instant', 'micro_deposits', 'bank_account_verification'));
ALTER TABLE verifications
    ADD COLUMN checks jsonb CHECK (checks IS NULL OR jsonb_typeof(checks) = 'object'),
    ADD CONSTRAINT verifications_checks_bav CHECK (checks IS NULL OR method = 'bank_account_verification');
-- The poll job's queue: pending bank verifications.
CREATE INDEX verifications_bav_pending ON verifications (updated_at)
    WHERE method = 'bank_account_verification' AND status = 'pending';

-- +goose Down
DROP INDEX verifications_bav_pending;
ALTER TABLE verifications DROP CONSTRAINT verifications_checks_bav, DROP COLUMN checks;
DELETE FROM verification_failures WHERE verification_id IN
    (SELECT id FROM verifications WHERE method = 'bank_account_verification' OR requested_method = 'bank_account_verification');
DELETE FROM verifications WHERE method = 'bank_account_verification' OR requested_method = 'bank_account_verification';
ALTER TABLE verifications DROP CONSTRAINT verifications_method_check;
ALTER TABLE verifications ADD CONSTRAINT verifications_method_check
    CHECK (method IN ('instant', 'micro_deposits'));
ALTER TABLE verifications DROP CONSTRAINT verifications_requested_method_check;
ALTER TABLE verifications ADD CONSTRAINT verifications_requested_method_check
    CHECK (requested_method IN ('auto', 'instant', 'micro_deposits'));
