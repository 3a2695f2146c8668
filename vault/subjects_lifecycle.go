package vault

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// The vault owns the subjects table: other packages (compliance's erasure,
// holds, export and dormancy; verification's limits; idempotency) read and
// change a subject's row only through the functions below, in their own
// transaction, so that locks and conditional updates stay where they were.
// The catalog-driven erasure and export (compliance/catalog.go) are the one
// exception: they walk every table with a subject_id column, subjects
// included, and name none.

// LockSubject takes the subject's row FOR UPDATE until tx ends: the lock
// every destructive step of an erasure takes (compliance.GuardDestruction),
// and that a legal hold's insert (its foreign key's key-share lock) and a
// write checked by FenceSubject (FOR SHARE) conflict with. An unknown
// subject locks nothing and is no error: the caller's next step finds it
// gone.
func LockSubject(ctx context.Context, tx pgx.Tx, subjectID string) error {
	if _, err := tx.Exec(ctx, `SELECT 1 FROM subjects WHERE id = $1 FOR UPDATE`, subjectID); err != nil {
		return fmt.Errorf("vault: lock subject: %w", postgres.Translate(err))
	}
	return nil
}

// MarkErasing fences the subject for the erasure request requestID from
// since on (FenceSubject and the subject_write_fence trigger refuse writes
// for them from then), unless a fence is set already; it reports whether it
// set one. Call it under the subject's lock (LockSubject), in the
// transaction that approves the erasure. The fence is never cleared: the
// erasure ends by deleting the row.
func MarkErasing(ctx context.Context, tx pgx.Tx, subjectID string, since time.Time, requestID string) (bool, error) {
	tag, err := tx.Exec(ctx, `
		UPDATE subjects SET erasing_since = $2, erasure_request_id = $3 WHERE id = $1 AND erasing_since IS NULL`,
		subjectID, since, requestID)
	if err != nil {
		return false, fmt.Errorf("vault: fence subject: %w", postgres.Translate(err))
	}
	return tag.RowsAffected() == 1, nil
}

// MarkErasingIfUnseen is MarkErasing for a dormant subject: it fences them
// only while they were last seen before unseenSince, so that a user seen
// again since a retention run listed them is kept.
func MarkErasingIfUnseen(ctx context.Context, tx pgx.Tx, subjectID string, since time.Time, requestID string, unseenSince time.Time) (bool, error) {
	tag, err := tx.Exec(ctx, `
		UPDATE subjects SET erasing_since = $2, erasure_request_id = $3
		WHERE id = $1 AND erasing_since IS NULL AND last_seen_at < $4`,
		subjectID, since, requestID, unseenSince)
	if err != nil {
		return false, fmt.Errorf("vault: fence subject: %w", postgres.Translate(err))
	}
	return tag.RowsAffected() == 1, nil
}

// SubjectCreatedAt returns when kluis first saw the subject (internal id).
// An unknown subject is ENotFound.
func SubjectCreatedAt(ctx context.Context, q postgres.Querier, subjectID string) (time.Time, error) {
	var at time.Time
	err := q.QueryRow(ctx, `SELECT created_at FROM subjects WHERE id = $1`, subjectID).Scan(&at)
	if err != nil {
		return time.Time{}, fmt.Errorf("vault: subject: %w", postgres.Translate(err))
	}
	return at, nil
}

// SubjectExists reports whether the subject (internal id) exists, and in a
// transaction keeps it so (FOR KEY SHARE) until the transaction ends: a row
// written next that refers to it cannot lose it to a concurrent delete.
func SubjectExists(ctx context.Context, q postgres.Querier, subjectID string) (bool, error) {
	var id string
	err := q.QueryRow(ctx, `SELECT id FROM subjects WHERE id = $1 FOR KEY SHARE`, subjectID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("vault: subject: %w", postgres.Translate(err))
	}
	return true, nil
}

// SeenAt moves the subject's last_seen_at up to at (never back): activity
// found elsewhere (the audit log) that the request path did not record.
func SeenAt(ctx context.Context, q postgres.Querier, subjectID string, at time.Time) error {
	_, err := q.Exec(ctx, `UPDATE subjects SET last_seen_at = $2 WHERE id = $1 AND last_seen_at < $2`, subjectID, at)
	if err != nil {
		return fmt.Errorf("vault: subject seen: %w", postgres.Translate(err))
	}
	return nil
}

// DormantSubject is a subject not seen since a cutoff (DormantSubjects).
type DormantSubject struct {
	// ID is the internal subject id.
	ID string
	// UserKey is the subject's user key (kluis.UserKey): what audit
	// pseudonyms are of.
	UserKey string
	// LastSeen is when kluis last saw them; with ID it is the position to
	// list on from.
	LastSeen time.Time
}

// DormantSubjects lists up to limit subjects created and last seen before
// before whose erasure is not running, oldest last_seen_at first (ties by
// id), after the subject after (nil: from the start), for the retention of
// dormant subjects.
func DormantSubjects(ctx context.Context, q postgres.Querier, before time.Time, after *DormantSubject, limit int) ([]DormantSubject, error) {
	var afterSeen *time.Time
	afterID := ""
	if after != nil {
		afterSeen, afterID = &after.LastSeen, after.ID
	}
	rows, err := q.Query(ctx, `
		SELECT s.id, s.app_id, s.external_id, s.last_seen_at FROM subjects s
		WHERE s.last_seen_at < $1 AND s.created_at < $1 AND s.erasing_since IS NULL
		  AND ($2::timestamptz IS NULL OR (s.last_seen_at, s.id) > ($2, $3))
		ORDER BY s.last_seen_at, s.id LIMIT $4`, before, afterSeen, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("vault: dormant subjects: %w", postgres.Translate(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DormantSubject, error) {
		var d DormantSubject
		var app, ext string
		err := r.Scan(&d.ID, &app, &ext, &d.LastSeen)
		d.UserKey = kluis.UserKey(app, ext)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("vault: dormant subjects: %w", postgres.Translate(err))
	}
	return out, nil
}
