package migrations

import (
	"errors"

	"github.com/jackc/pgx/v5"
)

// stdlibConfig parses url without echoing it: pgx's parse errors can quote the
// password.
func stdlibConfig(url string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, errors.New("migrations: the database URL does not parse as a Postgres URL")
	}
	cfg.RuntimeParams["application_name"] = "kluis-migrate"
	return cfg, nil
}
