package compliance_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// TestARoleThatOwnsNothingWritesTheAuditLogButCannotUndoIt follows
// docs/DEPLOYMENT.md: kluis serves as a role with the grants it needs and no
// ownership, and such a role can append and seal entries but can neither
// edit them nor switch the append-only triggers off.
func TestARoleThatOwnsNothingWritesTheAuditLogButCannotUndoIt(t *testing.T) {
	owner, u := pgtest.Open(t)
	ctx := context.Background()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	role := "kluis_app_" + hex.EncodeToString(b)
	for _, stmt := range []string{
		`CREATE ROLE ` + role + ` LOGIN`,
		`GRANT USAGE ON SCHEMA public, keystore TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public, keystore TO ` + role,
		`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public, keystore TO ` + role,
	} {
		if _, err := owner.Pool.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() {
		_, _ = owner.Pool.Exec(context.Background(), `DROP OWNED BY `+role)
		_, _ = owner.Pool.Exec(context.Background(), `DROP ROLE `+role)
	})
	asApp, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	asApp.User = url.User(role)
	app, err := postgres.Open(ctx, asApp.String())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()

	a := compliance.NewAuditor(app, testPseudonyms{}, nil)
	for i := 0; i < 3; i++ {
		if err := a.Record(ctx, entry()); err != nil {
			t.Fatalf("the app role cannot append: %v", err)
		}
	}
	if n, err := compliance.NewSealer(app, 0).SealPending(ctx); err != nil || n != 3 {
		t.Fatalf("the app role sealed %d (%v), want 3", n, err)
	}
	for _, stmt := range []string{
		`ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only`,
		`ALTER TABLE audit_chain DISABLE TRIGGER audit_chain_append_only`,
		`UPDATE audit_entries SET action = 'forged'`,
		`DELETE FROM audit_chain`,
	} {
		_, err := app.Pool.Exec(ctx, stmt)
		if err == nil || !(strings.Contains(err.Error(), "must be owner") || strings.Contains(err.Error(), "append-only") || strings.Contains(err.Error(), "checkpoint")) {
			t.Errorf("%s as the app role: %v, want a refusal", stmt, err)
		}
	}
	if res, err := compliance.Verify(ctx, app); err != nil || !res.OK || res.Entries != 3 {
		t.Fatalf("verify = %+v, %v", res, err)
	}
}
