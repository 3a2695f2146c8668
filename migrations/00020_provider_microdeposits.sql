-- Micro-deposits through the bank provider (issue 14 point 2): Plaid's Same
-- Day and Automated Micro-deposits, where the provider sends the deposit and
-- checks the answer, and its verification_status drives kluis's one
-- verification state machine; and the sandbox provider's copy of the flow.

-- +goose Up

-- provider_checked: the provider sends and checks the deposits (Plaid's
-- micro-deposits): kluis draws no amounts, holds no answer (answer_mac and
-- answer_kind are NULL), and the user confirms in the provider's Link (update
-- mode), not through kluis's confirm route.
ALTER TABLE verifications ADD COLUMN provider_checked boolean NOT NULL DEFAULT false;
ALTER TABLE verifications DROP CONSTRAINT verifications_check;
ALTER TABLE verifications ADD CONSTRAINT verifications_answer_kind
    CHECK ((method = 'micro_deposits' AND NOT provider_checked) = (answer_kind IS NOT NULL));
ALTER TABLE verifications ADD CONSTRAINT verifications_provider_checked
    CHECK (NOT provider_checked OR (method = 'micro_deposits' AND answer_mac IS NULL));

-- The sandbox provider's micro-deposit items: md_flow is same_day or
-- automated, md_status the item's account's verification_status as Plaid
-- names it, md_attempts the Same Day codes the user may still try.
ALTER TABLE sandbox_items
    ADD COLUMN md_flow text CHECK (md_flow IN ('same_day', 'automated')),
    ADD COLUMN md_status text CHECK (md_status ~ '^[a-z_]{1,64}$'),
    ADD COLUMN md_attempts integer NOT NULL DEFAULT 3 CHECK (md_attempts >= 0);

-- +goose Down
ALTER TABLE sandbox_items DROP COLUMN md_attempts, DROP COLUMN md_status, DROP COLUMN md_flow;
DELETE FROM verifications WHERE provider_checked;
ALTER TABLE verifications DROP CONSTRAINT verifications_provider_checked;
ALTER TABLE verifications DROP CONSTRAINT verifications_answer_kind;
ALTER TABLE verifications ADD CONSTRAINT verifications_check
    CHECK ((method = 'micro_deposits') = (answer_kind IS NOT NULL));
ALTER TABLE verifications DROP COLUMN provider_checked;
