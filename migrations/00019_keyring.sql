-- The key hierarchy's middle level (docs/ENVELOPE.md, "Key hierarchy"): the
-- root key (KMS, Transit or the local key) wraps a few keyring keys, one
-- per epoch, and the newest epoch's key wraps subject keys locally, so that
-- opening a subject key costs no call to the key provider. Root rotation
-- rewraps only the keyring keys (and the system keys); a new epoch re-wraps
-- subject keys locally, in batches, with `kluis keys rotate`.

-- +goose Up

-- One AES-256 keyring key per epoch, wrapped under the root key (bound at
-- the provider to "keyring/v<epoch>"). The newest epoch is the active one:
-- new subject keys are wrapped under it. An older epoch's row is deleted
-- once no subject key refers to it any more (the foreign key below refuses
-- the delete while one does).
CREATE TABLE keystore.keyring_keys (
    epoch        integer PRIMARY KEY CHECK (epoch >= 1),
    wrapped      bytea NOT NULL,
    root_version text NOT NULL DEFAULT '',
    wrapped_at   timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- A subject key wrapped by a keyring key names its epoch; NULL is a key
-- wrapped directly by the root key (before this migration), which the
-- rotation job moves into the hierarchy. The wrapped bytes are then the
-- local wrap of docs/ENVELOPE.md, and root_version is ''.
ALTER TABLE keystore.subject_keys
    ADD COLUMN keyring_epoch integer REFERENCES keystore.keyring_keys (epoch);

-- The epoch re-wrap walks each old epoch (and the root-wrapped keys) in id
-- order: what it filters and orders on, and what the foreign key checks
-- when an old epoch's row is deleted.
CREATE INDEX subject_keys_keyring_epoch ON keystore.subject_keys (keyring_epoch, id);
-- The re-seal pass finds subjects whose newest key is past its
-- cryptoperiod by walking subjects in order; (subject_id, version) is
-- unique already. Root rotation no longer looks at subject keys.
DROP INDEX keystore.subject_keys_root_version;

-- What the rotation job could not do for one subject (a key that does not
-- unwrap, a record that fails its integrity check): recorded so that an
-- operator sees it, and retried by the next run without holding up anyone
-- else. step is 'rewrap' or 'reseal'; reason is a category in words, never
-- key material. Erasure deletes a subject's rows with its keys.
CREATE TABLE keystore.rotation_failures (
    subject_id      text NOT NULL,
    step            text NOT NULL CHECK (step IN ('rewrap', 'reseal')),
    reason          text NOT NULL CHECK (length(reason) BETWEEN 1 AND 200),
    attempts        integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject_id, step)
);

-- +goose Down
DROP TABLE keystore.rotation_failures;
CREATE INDEX subject_keys_root_version ON keystore.subject_keys (root_version);
DROP INDEX keystore.subject_keys_keyring_epoch;
ALTER TABLE keystore.subject_keys DROP COLUMN keyring_epoch;
DROP TABLE keystore.keyring_keys;
