package migrations

import "context"

// UpTo applies the migrations up to and including version, for tests that
// put rows in place before a migration runs.
func UpTo(ctx context.Context, url string, version int64) error {
	db, err := open(url)
	if err != nil {
		return err
	}
	defer db.Close()
	p, err := provider(db)
	if err != nil {
		return err
	}
	_, err = p.UpTo(ctx, version)
	return err
}
