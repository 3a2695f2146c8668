// Package migrations holds kluis's schema as SQL files, embedded in the binary
// and applied by goose. Each file is one version; applied versions are recorded
// in goose_db_version, so running Up twice changes nothing the second time.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed *.sql
var files embed.FS

// provider builds a goose provider over the embedded files. A Postgres session
// lock keeps two instances from migrating at once.
func provider(db *sql.DB) (*goose.Provider, error) {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, err
	}
	return goose.NewProvider(goose.DialectPostgres, db, files,
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	)
}

func open(url string) (*sql.DB, error) {
	cfg, err := stdlibConfig(url)
	if err != nil {
		return nil, err
	}
	return stdlib.OpenDB(*cfg), nil
}

// Up applies every migration not yet applied and returns how many it applied.
func Up(ctx context.Context, url string) (int, error) {
	db, err := open(url)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	p, err := provider(db)
	if err != nil {
		return 0, fmt.Errorf("migrations: %w", err)
	}
	res, err := p.Up(ctx)
	if err != nil {
		return len(res), fmt.Errorf("migrations: apply: %w", err)
	}
	return len(res), nil
}

// Pending reports whether the database at url lacks any migration kluis has.
// `kluis serve` refuses to start on an out-of-date schema.
func Pending(ctx context.Context, url string) (bool, error) {
	db, err := open(url)
	if err != nil {
		return false, err
	}
	defer db.Close()
	p, err := provider(db)
	if err != nil {
		return false, fmt.Errorf("migrations: %w", err)
	}
	return p.HasPending(ctx)
}
