package banklink

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/events"
)

// itemEvent writes an item event for the apps (docs/WEBHOOKS.md) to the
// outbox in tx, the transaction of the change it announces: the event
// exists exactly when the change commits. Its data are the item's id and
// its status after the change, nothing else (no token, no number).
func itemEvent(ctx context.Context, tx pgx.Tx, eventType, subjectID, itemID, status string) error {
	_, err := events.Enqueue(ctx, tx, events.Event{Subject: subjectID, Type: eventType, Data: map[string]string{"item_id": itemID, "status": status}})
	return err
}
