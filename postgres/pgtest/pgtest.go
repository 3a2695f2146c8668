// Package pgtest gives tests a fresh, migrated Postgres database of their own.
//
// The server comes from KLUIS_TEST_DATABASE_URL (default: the local server as
// user postgres). The first call in a test binary migrates a template database
// and checks that no migration is left pending; every call then clones the
// template (fast) into a database that is dropped when the test ends. With no
// server, tests skip, except when CI is set: then they fail, because a suite
// that silently skipped its database tests proves nothing.
//
// Tests run as kluis runs in production: the server's user migrates (the
// owner), and New hands tests the URL of the serving role, which owns nothing
// and holds exactly migrations.ServingGrants (granted by the same code as
// `kluis migrate`). Roles are cluster-wide, so every test binary shares one
// serving role, ServingRole, created once. The few tests that must act as
// the owner (tampering with the audit log, as an attacker with the owner's
// rights would) ask for OwnerURL.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/migrations"
	"github.com/kluis-dev/kluis/postgres"
)

// DefaultURL is the server tests use when KLUIS_TEST_DATABASE_URL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// ServingRole is the role tests serve as, shared by every test database on
// the server. Its password is no secret: it exists for servers that do not
// trust local connections.
const (
	ServingRole     = "kluis_test_serving"
	servingPassword = "kluis-test-serving"
)

// roleLock is the advisory-lock key under which test binaries that start at
// once create the serving role one at a time.
const roleLock int64 = 0x6b6c756973_7e01

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
	createMu     sync.Mutex // CREATE DATABASE … TEMPLATE refuses concurrent use of one template
)

// ServerURL returns the URL of the test server's maintenance database.
func ServerURL() string {
	if u := os.Getenv("KLUIS_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// New creates a fresh migrated database for t, dropped at t's end, and
// returns its URL.
func New(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		unreachable(t, err)
	}
	defer admin.Close(ctx)

	templateOnce.Do(func() { templateName, templateErr = makeTemplate(ctx, admin) })
	if templateErr != nil {
		t.Fatalf("pgtest: template database: %v", templateErr)
	}
	name := "kluis_test_" + randomHex(8)
	createMu.Lock()
	_, err = admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, templateName))
	createMu.Unlock()
	if err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() { drop(name) })
	u, err := servingURL(ServerURL(), name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return u
}

// Open is New followed by postgres.Open; the pool (as the serving role) is
// closed at t's end.
func Open(t testing.TB) (*postgres.DB, string) {
	t.Helper()
	u := New(t)
	return open(t, u), u
}

// OwnerURL returns the URL of the database New made (u is its serving URL)
// as the owner, the role that migrated it: for tests that play an attacker
// with the owner's rights, or set up what no serving code path can.
func OwnerURL(t testing.TB, u string) string {
	t.Helper()
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return withDatabase(t, ServerURL(), strings.TrimPrefix(parsed.Path, "/"))
}

// OpenOwner opens the database New made (u is its serving URL) as the
// owner; the pool is closed at t's end.
func OpenOwner(t testing.TB, u string) *postgres.DB {
	t.Helper()
	return open(t, OwnerURL(t, u))
}

func open(t testing.TB, u string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), u)
	if err != nil {
		t.Fatalf("pgtest: open: %v", err)
	}
	t.Cleanup(db.Close)
	return db
}

func unreachable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("pgtest: no Postgres at KLUIS_TEST_DATABASE_URL (CI is set, so this fails): %v", err)
	}
	t.Skipf("pgtest: no Postgres reachable, skipping: %v", err)
}

func makeTemplate(ctx context.Context, admin *pgx.Conn) (string, error) {
	name := "kluis_tmpl_" + randomHex(8)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	u, err := replaceDatabase(ServerURL(), name)
	if err != nil {
		return "", err
	}
	if _, err := migrations.Up(ctx, u); err != nil {
		return "", err
	}
	if err := ensureRole(ctx, admin, ServingRole, servingPassword); err != nil {
		return "", fmt.Errorf("serving role: %w", err)
	}
	serving, err := servingURL(ServerURL(), name)
	if err != nil {
		return "", err
	}
	if _, err := migrations.GrantServing(ctx, u, serving); err != nil {
		return "", err
	}
	pending, err := migrations.Pending(ctx, serving)
	if err != nil {
		return "", err
	}
	if pending {
		return "", fmt.Errorf("migrations still pending after Up")
	}
	// The template outlives this test binary only if it crashes; a normal exit
	// leaves it for the next run's sweep (see sweep below).
	go sweep()
	return name, nil
}

// ensureRole creates the shared serving role (name) unless it exists. Test
// binaries start at once, so the check and the CREATE ROLE run under an
// advisory lock; the role is never dropped (every test database's grants
// name it).
func ensureRole(ctx context.Context, admin *pgx.Conn, name, password string) error {
	return pgx.BeginFunc(ctx, admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, roleLock); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, name).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return nil
		}
		_, err := tx.Exec(ctx, fmt.Sprintf(`CREATE ROLE %s LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD '%s'`,
			pgx.Identifier{name}.Sanitize(), password))
		return err
	})
}

// servingURL is the URL of database name on the test server as the serving
// role.
func servingURL(server, name string) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", fmt.Errorf("KLUIS_TEST_DATABASE_URL is not a URL")
	}
	u.User = url.UserPassword(ServingRole, servingPassword)
	u.Path = "/" + name
	return u.String(), nil
}

// sweep drops test databases left over by earlier runs that crashed, once
// they are an hour old, so a developer's server does not fill up.
func sweep() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		return
	}
	defer admin.Close(ctx)
	rows, err := admin.Query(ctx, `
		SELECT d.datname FROM pg_database d
		WHERE (d.datname LIKE 'kluis_test_%' OR d.datname LIKE 'kluis_tmpl_%')
		  AND (pg_stat_file('base/' || d.oid || '/PG_VERSION', true)).modification < now() - interval '1 hour'`)
	if err != nil {
		return
	}
	names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, n := range names {
		_, _ = admin.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", pgx.Identifier{n}.Sanitize()))
	}
}

func drop(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		return
	}
	defer admin.Close(ctx)
	_, _ = admin.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name))
}

func withDatabase(t testing.TB, server, name string) string {
	t.Helper()
	u, err := replaceDatabase(server, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return u
}

func replaceDatabase(server, name string) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", fmt.Errorf("KLUIS_TEST_DATABASE_URL is not a URL")
	}
	u.Path = "/" + name
	return u.String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
