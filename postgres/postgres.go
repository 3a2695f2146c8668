// Package postgres opens kluis's connection pool, runs transactions, and
// translates database errors into kluis errors. Feature stores build on it;
// no other package speaks to pgx's error types.
package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Querier is what a store needs of a pool or a transaction: *pgxpool.Pool
// and pgx.Tx both satisfy it, so one function can run alone or inside a
// caller's transaction.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// DB is kluis's handle on Postgres: a pgx pool plus the transaction helper.
type DB struct {
	Pool *pgxpool.Pool
	// Side is a small pool of its own for the reads kluis's key hierarchy
	// makes from inside a caller's work (the keyring's epoch rows, a system
	// key's confirmation), which may run while that caller holds one of
	// Pool's connections in a transaction. Were they taken from Pool, enough
	// such callers at once would each hold a connection while waiting for
	// another that only their own commits can free: a deadlock. Side's
	// reads never wait on Pool, so they always finish.
	Side *pgxpool.Pool
}

// sideConns is the size of DB.Side: its reads are rare and short.
const sideConns = 2

// Open connects to the database at url and checks that it answers. The pool
// is sized for a small service; pgx's defaults apply otherwise.
func Open(ctx context.Context, url string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors can quote the URL, password included: say only
		// that it did not parse.
		return nil, fmt.Errorf("postgres: KLUIS_DATABASE_URL does not parse as a Postgres URL")
	}
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > 5*time.Second {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "kluis"
	// Every statement is bounded, so a stuck query cannot hold a connection
	// (and the request waiting on it) forever.
	if _, ok := cfg.ConnConfig.RuntimeParams["statement_timeout"]; !ok {
		cfg.ConnConfig.RuntimeParams["statement_timeout"] = "30000"
	}
	// Times leave kluis in UTC (the contract: RFC 3339 in UTC), whatever the time zone of the host
	// or the database's default: the session's, for times Postgres renders
	// itself (to_jsonb in an export), and the scanned time.Time values'.
	if _, ok := cfg.ConnConfig.RuntimeParams["timezone"]; !ok {
		cfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	}
	cfg.AfterConnect = scanTimesInUTC
	sideCfg := cfg.Copy()
	sideCfg.MaxConns = sideConns
	sideCfg.MinConns = 0
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open pool: %w", Translate(err))
	}
	side, err := pgxpool.NewWithConfig(ctx, sideCfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: open side pool: %w", Translate(err))
	}
	return &DB{Pool: pool, Side: side}, nil
}

// scanTimesInUTC makes timestamptz values scan as UTC times; pgx otherwise
// gives them in time.Local, which a host's TZ sets.
func scanTimesInUTC(_ context.Context, conn *pgx.Conn) error {
	conn.TypeMap().RegisterType(&pgtype.Type{
		Name: "timestamptz", OID: pgtype.TimestamptzOID,
		Codec: &pgtype.TimestamptzCodec{ScanLocation: time.UTC},
	})
	return nil
}

// Aside is the pool for reads made from inside a caller's work (Side), or
// Pool for a DB built without one.
func (db *DB) Aside() Querier {
	if db.Side != nil {
		return db.Side
	}
	return db.Pool
}

// Close closes every connection of both pools.
func (db *DB) Close() {
	db.Pool.Close()
	if db.Side != nil {
		db.Side.Close()
	}
}

// Ping checks that the database answers a query; /readyz uses it.
func (db *DB) Ping(ctx context.Context) error {
	var one int
	if err := db.Pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return Translate(err)
	}
	return nil
}

// maxAttempts bounds the retries of a transaction that failed on a
// serialization failure or a deadlock.
const maxAttempts = 3

// InTx runs fn in a transaction and commits it when fn returns nil. A
// serialization failure or deadlock reruns fn (fn must therefore be safe to
// run again); any other error rolls back and is returned translated.
func (db *DB) InTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	var err error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		err = db.inTxOnce(ctx, fn)
		if !IsRetryable(err) {
			return err
		}
	}
	return err
}

func (db *DB) inTxOnce(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		return Translate(err)
	}
	// Rollback after Commit is a no-op in pgx.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := fn(tx); err != nil {
		return Translate(err)
	}
	return Translate(tx.Commit(ctx))
}
