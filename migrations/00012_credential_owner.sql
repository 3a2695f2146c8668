-- Every credential names the object that owns it: the item whose access token
-- it is, or the account whose numbers it holds. Envelope format version 2
-- binds the owner into the record's AAD (docs/ENVELOPE.md), so that a pointer
-- made to point at another owner's credential is refused on reveal instead of
-- handing out the other owner's secret. Records sealed before this migration
-- (format version 1) bind no owner: for them the owner is taken from the
-- pointers as they are now, checked against the pointer on every use, and the
-- key-rotation job re-seals them as version 2 (`kluis keys rotate`).
--
-- The serving role inserts owner_type and owner_id with a credential and
-- never needs to change them: it needs no UPDATE on these two columns, and a
-- trigger refuses any change of them.

-- +goose Up
ALTER TABLE credentials
    ADD COLUMN owner_type text CHECK (owner_type IN ('item', 'account')),
    ADD COLUMN owner_id   text,
    ADD CONSTRAINT credentials_owner_whole CHECK ((owner_type IS NULL) = (owner_id IS NULL));

-- The owner of an existing credential is the one live pointer that names it,
-- of the type that fits its kind. A credential that two pointers name, or
-- none, gets no owner: kluis cannot tell whose it is, so it is never revealed
-- (500 integrity) until someone who can tell sets it right.
UPDATE credentials c SET owner_type = p.owner_type, owner_id = p.owner_id
FROM (
    SELECT ref, min(owner_type) AS owner_type, min(owner_id) AS owner_id
    FROM (
        SELECT credential_ref AS ref, 'item' AS owner_type, id AS owner_id FROM items
        WHERE credential_ref IS NOT NULL AND status <> 'removed'
        UNION ALL
        SELECT pending_credential_ref, 'item', id FROM items
        WHERE pending_credential_ref IS NOT NULL AND status <> 'removed'
        UNION ALL
        SELECT account_number_ref, 'account', id FROM accounts
        WHERE account_number_ref IS NOT NULL AND removed_at IS NULL
    ) pointer
    GROUP BY ref
    HAVING count(*) = 1
) p
WHERE p.ref = c.ref AND (c.kind = 'bank_access_token') = (p.owner_type = 'item');

-- A credential's owner is written with it and never changes: the serving
-- role (which does not own the table, so cannot disable this) cannot rename
-- one. For a version-2 record the AAD would catch it anyway; for a version-1
-- record, until it is re-sealed, this is what keeps its owner honest.
-- +goose StatementBegin
CREATE FUNCTION credentials_owner_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.owner_type IS DISTINCT FROM OLD.owner_type OR NEW.owner_id IS DISTINCT FROM OLD.owner_id THEN
        RAISE EXCEPTION 'a credential''s owner never changes: UPDATE of % refused', OLD.ref
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER credentials_owner_fixed BEFORE UPDATE OF owner_type, owner_id ON credentials
    FOR EACH ROW EXECUTE FUNCTION credentials_owner_fixed();

-- Who points at a credential (the reveal's and the re-seal's pointer check,
-- and the foreign-key checks when a credential is destroyed).
CREATE INDEX items_credential_ref ON items (credential_ref) WHERE credential_ref IS NOT NULL;
CREATE INDEX items_pending_credential_ref ON items (pending_credential_ref) WHERE pending_credential_ref IS NOT NULL;
CREATE INDEX accounts_account_number_ref ON accounts (account_number_ref) WHERE account_number_ref IS NOT NULL;

-- Subjects that still hold version-1 records (a current or a pending
-- version), for the re-seal to version 2. Tombstones have neither.
CREATE INDEX credentials_envelope_v1 ON credentials (subject_id)
    WHERE get_byte(envelope, 0) = 1 OR get_byte(pending_envelope, 0) = 1;

-- +goose Down
DROP TRIGGER credentials_owner_fixed ON credentials;
DROP FUNCTION credentials_owner_fixed();
DROP INDEX credentials_envelope_v1;
DROP INDEX accounts_account_number_ref;
DROP INDEX items_pending_credential_ref;
DROP INDEX items_credential_ref;
ALTER TABLE credentials DROP CONSTRAINT credentials_owner_whole;
ALTER TABLE credentials DROP COLUMN owner_id;
ALTER TABLE credentials DROP COLUMN owner_type;
