-- Apps (issue 17): every data subject belongs to one app, and a user is a
-- subject within one app. Apps themselves are configuration
-- (KLUIS_APPS_FILE, or the single-app settings as the app "default"), not
-- rows: the app id here is their name. Every subject that exists is in the
-- default app; the same external id (a token's sub) in two apps is two
-- subjects, two key sets, two erasures.
--
-- An event is for the users of one app (app_id) or, when app_id is NULL
-- (audit.head), for every app. No table is added: no new grant.

-- +goose Up
ALTER TABLE subjects ADD COLUMN app_id text NOT NULL DEFAULT 'default'
    CHECK (app_id ~ '^[a-z][a-z0-9_-]{0,62}$');
-- From here on every insert names its app: a forgotten app is an error,
-- not a silent member of the default app.
ALTER TABLE subjects ALTER COLUMN app_id DROP DEFAULT;
ALTER TABLE subjects DROP CONSTRAINT subjects_external_id_key;
ALTER TABLE subjects ADD CONSTRAINT subjects_app_external_id_key UNIQUE (app_id, external_id);

ALTER TABLE outbox ADD COLUMN app_id text
    CHECK (app_id IS NULL OR app_id ~ '^[a-z][a-z0-9_-]{0,62}$');

-- +goose Down
ALTER TABLE outbox DROP COLUMN app_id;
ALTER TABLE subjects DROP CONSTRAINT subjects_app_external_id_key;
ALTER TABLE subjects ADD CONSTRAINT subjects_external_id_key UNIQUE (external_id);
ALTER TABLE subjects DROP COLUMN app_id;
