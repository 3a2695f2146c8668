package pgtest_test

import (
	"context"
	"testing"

	"github.com/kluis-dev/kluis/migrations"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

func TestNewGivesAMigratedDatabaseAndMigrateTwiceIsANoOp(t *testing.T) {
	db, u := pgtest.Open(t)
	ctx := context.Background()
	var n int
	if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM job_runs").Scan(&n); err != nil {
		t.Fatalf("job_runs missing: %v", err)
	}
	applied, err := migrations.Up(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	if applied != 0 {
		t.Fatalf("second migrate applied %d migrations, want 0", applied)
	}
}
