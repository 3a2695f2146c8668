package verification_test

import (
	"context"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
)

// During a rolling upgrade, the release before migration 00029 still inserts
// failure rows without an app (recordFailure's statement of that release,
// below). The insert must succeed, with the subject's app: were it refused,
// the transaction of a last wrong guess would roll back the attempt it spent.
func TestAFailureRowFromTheReleaseBeforeTakesItsSubjectsApp(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	sub, err := vault.EnsureSubject(ctx, db.Pool, kluis.UserKey("shop", "user_upgrade"))
	if err != nil {
		t.Fatal(err)
	}
	verID := kluis.NewID("ver_")
	if _, err := db.Pool.Exec(ctx, `
		INSERT INTO verification_failures (verification_id, subject_id, account_id, number_index, failed_at)
		VALUES ($1, $2, $3, NULL, $4)`, verID, sub, kluis.NewID("acc_"), time.Now()); err != nil {
		t.Fatalf("the earlier release's insert: %v", err)
	}
	var app string
	if err := db.Pool.QueryRow(ctx, `SELECT app_id FROM verification_failures WHERE verification_id = $1`, verID).Scan(&app); err != nil || app != "shop" {
		t.Fatalf("app_id = %q, %v; want the subject's app", app, err)
	}
}
