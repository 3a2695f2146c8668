package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault/localkek"
)

// serveEnv is the environment `kluis serve` (and the commands that need the
// key provider) runs with over the database at u.
func serveEnv(t *testing.T, u string) map[string]string {
	t.Helper()
	kek := filepath.Join(t.TempDir(), "kek.b64")
	if err := localkek.Generate(kek); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"KLUIS_DATABASE_URL": u, "KLUIS_LOCAL_KEK_FILE": kek,
		"KLUIS_JWT_JWKS_FILE": jwttest.WriteJWKS(t, jwttest.DefaultKeys()...), "KLUIS_JWT_ISSUER": jwttest.Issuer,
		"KLUIS_LOG_LEVEL": "error",
	}
}

func TestMigrateGrantsTheServingRoleAndSaysSo(t *testing.T) {
	u := pgtest.New(t)
	env := map[string]string{"KLUIS_DATABASE_URL": u, "KLUIS_MIGRATE_DATABASE_URL": pgtest.OwnerURL(t, u)}
	code, out, errOut := runKluis(t, env, "migrate")
	if code != 0 || !strings.Contains(out, "up to date") || !strings.Contains(out, "granted the serving role "+pgtest.ServingRole) {
		t.Fatalf("migrate as the owner = %d %q %q", code, out, errOut)
	}
	code, out, _ = runKluis(t, map[string]string{"KLUIS_DATABASE_URL": pgtest.OwnerURL(t, u)}, "migrate")
	if code != 0 || !strings.Contains(out, "no grants to make") {
		t.Fatalf("migrate with one URL = %d %q, want the grants skipped", code, out)
	}
}

// TestAuditVerifyAgainstAKeptHead: `kluis audit head` prints a head; after
// the owner wipes the audit log and rebuilds it, `kluis audit verify --head`
// fails naming the problem, while plain verify cannot tell.
func TestAuditVerifyAgainstAKeptHead(t *testing.T) {
	db, u := pgtest.Open(t)
	ctx := context.Background()
	env := serveEnv(t, u)
	appendSealed := func(n int) {
		a := audit.NewAuditor(db, fixedPseudonyms{}, nil)
		for i := 0; i < n; i++ {
			if err := a.Record(ctx, audit.Entry{ActorKind: audit.ActorSystem, Actor: "test", Action: "test.step", Outcome: audit.OutcomeSuccess}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := audit.NewSealer(db, 0).SealPending(ctx); err != nil {
			t.Fatal(err)
		}
	}
	appendSealed(4)
	code, out, errOut := runKluis(t, env, "audit", "head")
	if code != 0 || !strings.HasPrefix(out, `{"pos":4,"hash":"`) || !strings.Contains(out, `"sig":"v1:`) {
		t.Fatalf("audit head = %d %q %q", code, out, errOut)
	}
	file := filepath.Join(t.TempDir(), "head.json")
	if err := os.WriteFile(file, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	appendSealed(2)
	if code, out, errOut := runKluis(t, env, "audit", "verify", "--head", file); code != 0 || !strings.Contains(out, "extends the head") {
		t.Fatalf("verify against a good head = %d %q %q", code, out, errOut)
	}

	owner := pgtest.OpenOwner(t, u)
	err := owner.InTx(ctx, func(tx pgx.Tx) error {
		for _, stmt := range []string{
			`ALTER TABLE audit_entries DISABLE TRIGGER USER`,
			`ALTER TABLE audit_chain DISABLE TRIGGER USER`,
			`TRUNCATE audit_chain, audit_pending, audit_entries RESTART IDENTITY`,
			`ALTER TABLE audit_entries ENABLE TRIGGER USER`,
			`ALTER TABLE audit_chain ENABLE TRIGGER USER`,
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	appendSealed(5)
	if code, out, _ := runKluis(t, env, "audit", "verify"); code != 0 || !strings.Contains(out, "ok, 5 entries") {
		t.Fatalf("plain verify of the rebuilt chain = %d %q (it cannot tell; the head can)", code, out)
	}
	code, out, errOut = runKluis(t, env, "audit", "verify", "--head="+file)
	if code != 1 || !strings.Contains(out, "FAILED (head)") || !strings.Contains(out, "position 4 has another hash") {
		t.Fatalf("verify of the rebuilt chain against the kept head = %d %q %q, want exit 1 naming position 4", code, out, errOut)
	}

	// The head as kept, with a signature made up by whoever rebuilt the chain.
	kept := string(mustRead(t, file))
	forged := kept[:strings.Index(kept, `"sig":"`)] + `"sig":"v1:` + strings.Repeat("A", 43) + `"}`
	if err := os.WriteFile(file, []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runKluis(t, env, "audit", "verify", "--head", file)
	if code != 1 || !strings.Contains(out, "FAILED (head_signature)") {
		t.Fatalf("verify against a forged head = %d %q, want the signature refused", code, out)
	}
	if code, _, _ := runKluis(t, env, "audit", "verify", "--head"); code != 2 {
		t.Fatalf("--head without a file exited %d, want 2", code)
	}
}

func mustRead(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestProductionRefusesToServeAsARoleThatCouldRewriteTheAuditLog: the
// owner (a superuser here) is refused in production with a clear error, and
// only warned about in development; the serving role passes.
func TestProductionRefusesToServeAsARoleThatCouldRewriteTheAuditLog(t *testing.T) {
	_, u := pgtest.Open(t)
	ctx := context.Background()
	owner := pgtest.OpenOwner(t, u)
	serving, err := postgres.Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer serving.Close()
	logger, _ := newLogger(&config.Config{LogLevel: "error"}, os.Stderr)
	prod := &config.Config{Env: "production"}
	if err := checkServingRole(ctx, prod, serving, logger); err != nil {
		t.Fatalf("the serving role migrate sets up is refused: %v", err)
	}
	err = checkServingRole(ctx, prod, owner, logger)
	if err == nil || !strings.Contains(err.Error(), "may not serve in production") || !strings.Contains(err.Error(), "is a superuser") ||
		!strings.Contains(err.Error(), "KLUIS_MIGRATE_DATABASE_URL") {
		t.Fatalf("the owner in production = %v, want a refusal saying why and what to do", err)
	}
	if err := checkServingRole(ctx, &config.Config{Env: "development"}, owner, logger); err != nil {
		t.Fatalf("the owner in development = %v, want a warning only", err)
	}
}

// TestTheAuditHeadJobPublishesASignedHead runs the audit-head job as the
// scheduler would: an audit.head event holding a head that verifies.
func TestTheAuditHeadJobPublishesASignedHead(t *testing.T) {
	db, u := pgtest.Open(t)
	env := serveEnv(t, u)
	if code, out, errOut := runKluis(t, env, "jobs", "run", "audit-head"); code != 0 {
		t.Fatalf("jobs run audit-head = %d %q %q", code, out, errOut)
	}
	var data []byte
	if err := db.Pool.QueryRow(context.Background(), `SELECT payload FROM outbox WHERE type = 'audit.head'`).Scan(&data); err != nil {
		t.Fatalf("no audit.head event: %v", err)
	}
	file := filepath.Join(t.TempDir(), "event.json")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runKluis(t, env, "audit", "verify", "--head", file); code != 0 || !strings.Contains(out, "extends the head") {
		t.Fatalf("verify against the published event = %d %q %q", code, out, errOut)
	}
}
