-- The OAuth callback of a hosted link page (docs/HOSTED.md) finds the page
-- of a link session by the session's id (the OAuth state names the
-- session); without this index that is a scan of every page.

-- +goose Up
CREATE INDEX hosted_pages_object ON hosted_pages (object_id, purpose);

-- +goose Down
DROP INDEX hosted_pages_object;
