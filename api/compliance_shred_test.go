package api_test

import (
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
)

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// emptyDatabase creates a database with nothing in it, dropped when t ends.
func emptyDatabase(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pgtest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	name := strings.ToLower(strings.Replace(kluis.NewID("kluis_test_restore_"), "_restore_", "_r", 1))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin, err := pgx.Connect(context.Background(), pgtest.ServerURL())
		if err == nil {
			_, _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			admin.Close(context.Background())
		}
	})
	u, err := url.Parse(pgtest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// A data backup taken before an erasure (the key store left out, as
// operators are told to back it up apart) is restored after the erasure
// beside the live key store: the erased subject's records are there but do
// not open; another subject's records from the same backup do.
func TestCryptoShreddingMakesAnOldBackupOfTheErasedUnreadable(t *testing.T) {
	if _, err := exec.LookPath("pg_dump"); err != nil {
		t.Skip("pg_dump is not installed")
	}
	ce := startCompliance(t)
	ctx := context.Background()
	gone := makeSubjectData(t, ce.Env, "user_shredded")
	kept := makeSubjectData(t, ce.Env, "user_still_here")

	backup := filepath.Join(t.TempDir(), "data.dump")
	// Backups are the owner's task (the serving role cannot read sequences).
	run(t, "pg_dump", "--format=custom", "--exclude-schema=keystore", "--file="+backup, pgtest.OwnerURL(t, ce.DBURL))

	status, body := ce.call(t, "POST", "/erasure-requests", staff(t, "staff_a"), `{"subject_id":"user_shredded","reason":"T-9"}`)
	if status != 201 {
		t.Fatalf("request = %d %s", status, body)
	}
	id := decode[erasureBody](t, body).ID
	if status, body = ce.call(t, "POST", "/erasure-requests/"+id+"/approve", staff(t, "staff_b"), ""); status != 200 || decode[erasureBody](t, body).Status != "completed" {
		t.Fatalf("approve = %d %s", status, body)
	}

	restored := emptyDatabase(t)
	run(t, "pg_restore", "--no-owner", "--dbname="+restored, backup)
	keys := filepath.Join(t.TempDir(), "keystore.dump")
	run(t, "pg_dump", "--format=custom", "--schema=keystore", "--file="+keys, pgtest.OwnerURL(t, ce.DBURL))
	run(t, "pg_restore", "--no-owner", "--dbname="+restored, keys)

	db, err := postgres.Open(ctx, restored)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM credentials WHERE ref = ANY($1)`, []string{gone.tokenRef, gone.numberRef}).Scan(&n); err != nil || n != 2 {
		t.Fatalf("the backup should still hold the erased subject's two sealed records: %d, %v", n, err)
	}
	store := vault.NewStore(db, vault.NewKeyRing(ce.Keys, vault.CacheOptions{}), ce.System, apitest.CredentialKinds())
	for _, ref := range []string{gone.tokenRef, gone.numberRef} {
		c, err := store.Open(ctx, ref)
		if kluis.ErrorCode(err) != kluis.ENotFound {
			t.Errorf("an erased subject's record from the backup: Open = %v, %v; want not found", c, err)
		}
	}
	c, err := store.Open(ctx, kept.tokenRef)
	if err != nil {
		t.Fatalf("another subject's record from the same backup does not open: %v", err)
	}
	defer c.Zero()
	if want := fmt.Sprintf(`{"access_token":"access-sandbox-%s","provider":"sandbox"}`, "user_still_here"); string(c.Secret) != want {
		t.Errorf("opened %q, want the sealed secret", c.Secret)
	}
}
