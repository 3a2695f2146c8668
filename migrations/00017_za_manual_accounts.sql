-- South African manual accounts (README; api/openapi.yaml): the country and
-- bank of a manual account, and the holder's identity number, sealed as its
-- own credential kind (id_number) so that a bank account verification can
-- later send it to the bank without anything else storing it.

-- +goose Up

-- id_number: {"id_number"} sealed under the subject's key like an account
-- number; its blind_index is a keyed HMAC under the blind-index key with a
-- label of its own, so it never equals an account number's index.
ALTER TABLE credentials DROP CONSTRAINT credentials_kind_check;
ALTER TABLE credentials ADD CONSTRAINT credentials_kind_check
    CHECK (kind IN ('bank_access_token', 'account_number', 'id_number'));

-- country is the country of a manual account ('US' or 'ZA'; NULL for a
-- linked account, whose provider knows it). bank_id names a bank of the
-- za package's list (South African accounts only: a US account's bank is
-- its routing number, sealed). holder_id_ref is the sealed holder's ID
-- number, when the user gave one. The account number, branch code and
-- bank stay sealed in account_number_ref; bank_id is repeated here in the
-- clear because which bank holds an account is no secret kluis keeps (a
-- linked account's institution is stored in the clear too) and a
-- verification must pick its method without opening the vault.
ALTER TABLE accounts
    ADD COLUMN country text CHECK (country IN ('US', 'ZA')),
    ADD COLUMN bank_id text CHECK (bank_id ~ '^za_[a-z0-9_]{1,60}$'),
    ADD COLUMN holder_id_ref text REFERENCES credentials (ref),
    ADD CONSTRAINT accounts_country_manual CHECK (country IS NULL OR item_id IS NULL),
    ADD CONSTRAINT accounts_za_bank CHECK ((country IS NOT DISTINCT FROM 'ZA') = (bank_id IS NOT NULL)),
    ADD CONSTRAINT accounts_holder_id_za CHECK (holder_id_ref IS NULL OR country = 'ZA');
UPDATE accounts SET country = 'US' WHERE item_id IS NULL;
-- No owner backfill (00012's) is needed for id_number: none existed before
-- this migration, and every one is sealed with its account as owner
-- (vault.Seal binds an id_number to an account owner; PointersTo reads
-- holder_id_ref as that account's pointer).
CREATE INDEX accounts_holder_id_ref ON accounts (holder_id_ref) WHERE holder_id_ref IS NOT NULL;

-- +goose Down
DROP INDEX accounts_holder_id_ref;
ALTER TABLE accounts
    DROP CONSTRAINT accounts_holder_id_za,
    DROP CONSTRAINT accounts_za_bank,
    DROP CONSTRAINT accounts_country_manual,
    DROP COLUMN holder_id_ref,
    DROP COLUMN bank_id,
    DROP COLUMN country;
DELETE FROM credentials WHERE kind = 'id_number';
ALTER TABLE credentials DROP CONSTRAINT credentials_kind_check;
ALTER TABLE credentials ADD CONSTRAINT credentials_kind_check
    CHECK (kind IN ('bank_access_token', 'account_number'));
