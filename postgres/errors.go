package postgres

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kluis-dev/kluis"
)

// SQLStateSubjectErasing is what the database's write fence
// (subject_write_fence, migration 00010) raises for a row inserted for a
// subject whose erasure is running.
const SQLStateSubjectErasing = "KLE01"

// errRetry marks errors after which the whole transaction may be run again.
var errRetry = errors.New("postgres: transaction may be retried")

// Translate turns a pgx or Postgres error into a kluis error, so that callers
// never see SQLSTATEs, SQL or driver messages: no rows is not found, a unique
// violation is a conflict, a foreign-key or check violation is invalid input,
// serialization failures and deadlocks are retryable, and a database that
// cannot be reached is unavailable. kluis errors pass through unchanged.
func Translate(err error) error {
	if err == nil {
		return nil
	}
	var ke *kluis.Error
	if errors.As(err, &ke) {
		return err
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return kluis.Wrap(kluis.ENotFound, "not found", err)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return translateSQLState(pgErr, err)
	}
	if errors.Is(err, context.DeadlineExceeded) || isConnectionError(err) {
		return kluis.Unavailable("database", err)
	}
	return kluis.Wrap(kluis.EInternal, "internal error", err)
}

func translateSQLState(pgErr *pgconn.PgError, err error) error {
	switch pgErr.Code {
	case "23505":
		return kluis.Wrap(kluis.EConflict, "already exists", err)
	case "23503", "23514", "23502", "22P02", "22001":
		return kluis.Wrap(kluis.EInvalid, "invalid reference or value", err)
	case "40001", "40P01":
		return kluis.Wrap(kluis.EUnavailable, "database busy, try again", errors.Join(errRetry, kluis.ErrUnavailable, err))
	case "57014": // statement timeout or cancel
		return kluis.Unavailable("database", err)
	case SQLStateSubjectErasing:
		return kluis.Wrap(kluis.ESubjectErasing, "the subject's erasure is running; nothing new may be written for them", err)
	}
	switch pgErr.Code[:2] {
	case "08", "53", "57": // connection, insufficient resources, operator intervention
		return kluis.Unavailable("database", err)
	}
	return kluis.Wrap(kluis.EInternal, "internal error", err)
}

// isConnectionError reports whether err is the connection failing rather
// than the database answering: a network error, a failed connect, an error
// pgconn marks safe to retry (nothing was sent) or a timeout, and a
// connection the server closed under a query. pgproto3 turns the server's
// FIN in the middle of an answer into io.ErrUnexpectedEOF, which is no
// net.Error: a proxy or a server that closes its side of an open connection
// (rather than resetting it) gives that, and it is the database going away,
// not an internal error.
func isConnectionError(err error) bool {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return true
	}
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err)
}

// IsRetryable reports whether err (as returned by Translate) means the
// transaction may be run again.
func IsRetryable(err error) bool { return errors.Is(err, errRetry) }
