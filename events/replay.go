package events

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/apps"
	"github.com/kluis-dev/kluis/postgres"
)

// Replay sends an event of app again to the app's endpoints (or to the one
// whose configured id is endpointID, when set): every delivery of it that
// is delivered or dead becomes due now, and an endpoint added since the
// event was fanned out gets its first delivery. A delivery still pending
// is left to its own schedule (its lease may be held by a worker right
// now). An event of another app, or one that no longer exists, is
// ENotFound, alike; audit.head belongs to every app. audit runs in the
// same transaction with the number of deliveries made due, so that the
// replay and its audit entry commit together. A replayed delivery gets one
// attempt more than the retry period would give it, at least.
func Replay(ctx context.Context, db *postgres.DB, app *apps.App, eventID, endpointID string, now time.Time, audit func(pgx.Tx, int) error) (int, error) {
	if !ValidEventID(eventID) {
		return 0, kluis.Errorf(kluis.ENotFound, "not found")
	}
	var keys, shown []string
	for _, e := range app.Endpoints {
		if endpointID == "" || e.ID == endpointID {
			keys, shown = append(keys, e.Key), append(shown, e.Display())
		}
	}
	if endpointID != "" && len(keys) == 0 {
		return 0, kluis.Errorf(kluis.EInvalid, "endpoint_id: the app has no such endpoint").With("field", "endpoint_id")
	}
	var n int
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		var ok bool
		err := tx.QueryRow(ctx, `SELECT true FROM outbox WHERE id = $1 AND (app_id IS NULL OR app_id = $2) FOR UPDATE`,
			eventID, app.ID).Scan(&ok)
		if err != nil {
			return fmt.Errorf("events: replay: %w", postgres.Translate(err))
		}
		tag, err := tx.Exec(ctx, `
			INSERT INTO outbox_targets (event_id, endpoint_id, endpoint, status, next_attempt_at)
			SELECT $1, e.id, e.shown, 'pending', $4
			FROM unnest($2::text[], $3::text[]) AS e(id, shown)
			ON CONFLICT (event_id, endpoint_id) DO UPDATE SET status = 'pending', next_attempt_at = $4
			WHERE outbox_targets.status <> 'pending'`, eventID, keys, shown, now)
		if err != nil {
			return fmt.Errorf("events: replay: %w", postgres.Translate(err))
		}
		n = int(tag.RowsAffected())
		return audit(tx, n)
	})
	return n, err
}

// ValidEventID reports whether s looks like an event id.
func ValidEventID(s string) bool { return kluis.ValidID(PrefixEvent, s) }
