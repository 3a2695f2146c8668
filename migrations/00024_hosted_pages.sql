-- Hosted pages (docs/HOSTED.md): kluis's own link and verification pages,
-- opened through a short-lived page token of kluis's own.
--
-- A page row is one opening of one page for one object (a link session or a
-- verification) of one subject. Nothing here is a secret in the clear:
-- token_hash is the keyed HMAC (system key hosted-page) of the page token
-- the app put in the page's URL, which opens the page once; form_hash is the
-- HMAC of the one-time token the page's current form carries. Every form
-- post swaps form_hash for a new one in a conditional UPDATE, so a form is
-- taken once: a replayed, forged or cross-site post names a hash that is no
-- longer (or never was) there. state holds the steps' choices (an
-- institution id, the app's origin): no credential, no account number.

-- +goose Up
CREATE TABLE hosted_pages (
    id          text PRIMARY KEY CHECK (id LIKE 'hpg\_%'),
    subject_id  text NOT NULL REFERENCES subjects (id),
    purpose     text NOT NULL CHECK (purpose IN ('link', 'verify')),
    object_id   text NOT NULL CHECK (object_id LIKE 'lks\_%' OR object_id LIKE 'ver\_%'),
    token_hash  bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    form_hash   bytea UNIQUE CHECK (form_hash IS NULL OR length(form_hash) = 32),
    step        text NOT NULL DEFAULT '' CHECK (length(step) <= 32),
    state       jsonb NOT NULL DEFAULT '{}',
    opened_at   timestamptz,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((opened_at IS NULL) = (form_hash IS NULL))
);
CREATE INDEX hosted_pages_subject ON hosted_pages (subject_id);
CREATE INDEX hosted_pages_expiry ON hosted_pages (expires_at);
-- Like every table that names a subject: no page is opened for a subject
-- whose erasure runs (00010's fence).
CREATE TRIGGER subject_write_fence BEFORE INSERT ON public.hosted_pages
    FOR EACH ROW EXECUTE FUNCTION subject_write_fence();

-- public_token_sealed: the public token of a session that succeeded, sealed
-- (AES-256-GCM under a key derived from banklink's system key, bound to the
-- session id) so that GET /v1/link/sessions/{id} can hand it to an app that
-- comes back by redirect; cleared when the session is exchanged or expires.
-- selected_accounts: the account names the user picked on the hosted page
-- (NULL: every account). redirect_uri: where the hosted page sends the
-- browser back in the redirect flow (one of the app's configured origins).
ALTER TABLE link_sessions
    ADD COLUMN public_token_sealed bytea,
    ADD COLUMN selected_accounts text[],
    ADD COLUMN redirect_uri text CHECK (length(redirect_uri) <= 2048);

-- +goose Down
ALTER TABLE link_sessions
    DROP COLUMN public_token_sealed,
    DROP COLUMN selected_accounts,
    DROP COLUMN redirect_uri;
DROP TABLE hosted_pages;
