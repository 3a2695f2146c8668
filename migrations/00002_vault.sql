-- The vault: data subjects, the key store (its own schema), and sealed
-- credentials.

-- +goose Up

-- The key store lives in its own schema so that operators can back it up apart
-- from the data and keep those backups for a short time: once a subject's keys
-- are destroyed here and the key-store backups have rolled over, any copy of
-- the data left in a data backup or replica can no longer be read. For that
-- reason nothing in keystore refers to the public schema by foreign key.
CREATE SCHEMA keystore;

-- One AES-256 data key per data subject and version, stored only wrapped under
-- the root key (KMS, Vault Transit, or the local development key). subject_id
-- is the internal subject id (subjects.id), never the caller's external id.
-- Erasure deletes the subject's rows (crypto-shredding).
CREATE TABLE keystore.subject_keys (
    id           text PRIMARY KEY CHECK (id LIKE 'sk\_%'),
    subject_id   text NOT NULL,
    version      integer NOT NULL CHECK (version >= 1),
    wrapped      bytea NOT NULL,
    -- The root key version that wrapped it, as the provider names it ('' where
    -- the provider does not expose versions); the rewrap job looks for old ones.
    root_version text NOT NULL DEFAULT '',
    wrapped_at   timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Two instances that create a subject's first key at once must not make two
    -- version-1 keys: inserts use ON CONFLICT on this.
    UNIQUE (subject_id, version)
);
CREATE INDEX subject_keys_root_version ON keystore.subject_keys (root_version);

-- Named keys of the service itself: the HMAC keys of blind indexes, audit
-- pseudonyms and verification codes. Generated once by the key provider,
-- stored wrapped, unwrapped into memory at start.
CREATE TABLE keystore.system_keys (
    name         text NOT NULL CHECK (name ~ '^[a-z0-9-]{1,64}$'),
    version      integer NOT NULL CHECK (version >= 1),
    wrapped      bytea NOT NULL,
    root_version text NOT NULL DEFAULT '',
    wrapped_at   timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

-- Data subjects. external_id is the `sub` of the user's token: personal data,
-- held in this one row only, so that every other table refers to the random
-- internal id and erasure removes the link by deleting one row.
CREATE TABLE subjects (
    id          text PRIMARY KEY CHECK (id LIKE 'sub\_%'),
    external_id text NOT NULL UNIQUE CHECK (length(external_id) BETWEEN 1 AND 255),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Sealed credentials. envelope is the versioned AES-256-GCM envelope of
-- docs/ENVELOPE.md, bound to (subject_id, ref, kind, key_version); blind_index
-- is a keyed HMAC of the normalized account number, for lookups without
-- decryption. Nothing here is a secret in the clear.
CREATE TABLE credentials (
    ref         text PRIMARY KEY CHECK (ref LIKE 'cred\_%'),
    subject_id  text NOT NULL REFERENCES subjects (id),
    kind        text NOT NULL CHECK (kind IN ('bank_access_token', 'account_number')),
    key_version integer NOT NULL CHECK (key_version >= 1),
    envelope    bytea NOT NULL,
    blind_index bytea CHECK (blind_index IS NULL OR length(blind_index) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credentials_subject ON credentials (subject_id, key_version);
CREATE INDEX credentials_blind_index ON credentials (kind, blind_index) WHERE blind_index IS NOT NULL;

-- +goose Down
DROP TABLE credentials;
DROP TABLE subjects;
DROP TABLE keystore.system_keys;
DROP TABLE keystore.subject_keys;
DROP SCHEMA keystore;
