package migrations_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/migrations"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// emptyDatabase creates a database with no migration applied, dropped at
// t's end, and returns its URL.
func emptyDatabase(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, pgtest.ServerURL())
	if err != nil {
		t.Skipf("no Postgres: %v", err)
	}
	defer admin.Close(ctx)
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	name := "kluis_mig_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, pgtest.ServerURL()); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = c.Close(ctx)
		}
	})
	u, err := url.Parse(pgtest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// Migration 00012 gives each existing credential the owner whose one live
// pointer names it, of the type that fits its kind; a credential two
// pointers name, or none, or one named by a pointer of the wrong type, gets
// no owner (it is never revealed until someone who can tell sets it right).
func TestTheOwnerBackfillTakesTheOneLivePointer(t *testing.T) {
	ctx := context.Background()
	u := emptyDatabase(t)
	if err := migrations.UpTo(ctx, u, 11); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`INSERT INTO subjects (id, external_id) VALUES ('sub_1', 'user-1')`)
	cred := func(ref, kind string) {
		exec(`INSERT INTO credentials (ref, subject_id, kind, key_version, envelope) VALUES ($1, 'sub_1', $2, 1, '\x01')`, ref, kind)
	}
	for _, c := range []struct{ ref, kind string }{
		{"cred_token", "bank_access_token"}, {"cred_pending", "bank_access_token"}, {"cred_number", "account_number"},
		{"cred_shared", "account_number"}, {"cred_orphan", "account_number"}, {"cred_wrongtype", "account_number"},
		{"cred_removed", "account_number"},
	} {
		cred(c.ref, c.kind)
	}
	item := func(id, ref, pending string) {
		exec(`INSERT INTO items (id, subject_id, provider, provider_item_id, institution_id, institution_name, status,
			credential_ref, pending_credential_ref) VALUES ($1, 'sub_1', 'sandbox', $1, 'ins', 'Bank', 'active', $2, NULLIF($3, ''))`,
			id, ref, pending)
	}
	item("itm_a", "cred_token", "cred_pending")
	item("itm_b", "cred_wrongtype", "")
	account := func(id, ref string, removed bool) {
		var removedAt any
		if removed {
			removedAt = time.Now()
		}
		exec(`INSERT INTO accounts (id, subject_id, account_number_ref, removed_at) VALUES ($1, 'sub_1', $2, $3)`, id, ref, removedAt)
	}
	account("acc_a", "cred_number", false)
	account("acc_b", "cred_shared", false)
	account("acc_c", "cred_shared", false)
	account("acc_d", "cred_removed", true)

	if err := migrations.UpTo(ctx, u, 12); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"cred_token": "item/itm_a", "cred_pending": "item/itm_a", "cred_number": "account/acc_a",
		"cred_shared": "", "cred_orphan": "", "cred_wrongtype": "", "cred_removed": "",
	}
	for ref, owner := range want {
		var got string
		if err := conn.QueryRow(ctx, `SELECT COALESCE(owner_type || '/' || owner_id, '') FROM credentials WHERE ref = $1`, ref).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != owner {
			t.Errorf("%s: owner %q, want %q", ref, got, owner)
		}
	}
	var v1 int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM credentials WHERE get_byte(envelope, 0) = 1`).Scan(&v1); err != nil || v1 != len(want) {
		t.Fatalf("version-1 records %d (%v), want %d", v1, err, len(want))
	}
}
