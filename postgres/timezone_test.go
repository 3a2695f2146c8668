package postgres_test

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// hostOffset is the host zone every test of this package runs under.
const hostOffset = 2 * 60 * 60

// TestMain runs the package with a host zone that is not UTC, so that a
// time that leaks the host's zone shows.
func TestMain(m *testing.M) {
	time.Local = time.FixedZone("UTC+2", hostOffset)
	os.Exit(m.Run())
}

// The contract (api/openapi.yaml): times are RFC 3339 in UTC. A host with TZ set, or a database whose
// default time zone is not UTC, must not change what kluis answers.
func TestTimesAreUTCWhateverTheHostAndDatabaseTimeZones(t *testing.T) {
	ctx := context.Background()
	u := pgtest.New(t)
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	// Setting a database's defaults takes its owner.
	admin, err := pgx.Connect(ctx, pgtest.OwnerURL(t, u))
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(parsed.Path, "/")
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" SET timezone = 'Asia/Kolkata'"); err != nil {
		t.Fatal(err)
	}
	_ = admin.Close(ctx)

	// The host's zone is UTC+2 for the whole package (TestMain): set once,
	// before any goroutine runs, since changing time.Local while another
	// test's goroutines read the clock is a data race.
	if _, off := time.Now().Zone(); off != hostOffset {
		t.Fatalf("the host zone is not the one TestMain set")
	}

	db, err := postgres.Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	var scanned time.Time
	var rendered string
	if err := db.Pool.QueryRow(ctx, `SELECT now(), to_jsonb(now())::text`).Scan(&scanned, &rendered); err != nil {
		t.Fatal(err)
	}
	if scanned.Location() != time.UTC {
		t.Errorf("a scanned time is in %v, want UTC", scanned.Location())
	}
	if !strings.HasSuffix(rendered, `+00:00"`) {
		t.Errorf("a time Postgres renders is %s, want UTC", rendered)
	}
}
