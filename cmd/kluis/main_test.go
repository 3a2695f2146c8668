package main

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

func runKluis(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut)
	return code, out.String(), errOut.String()
}

type fixedPseudonyms struct{}

func (fixedPseudonyms) Pseudonym(kind, value string) string {
	return kind + ":" + strings.Repeat("x", 8)
}

func TestMigrateTwiceIsANoOp(t *testing.T) {
	u := pgtest.New(t)
	env := map[string]string{"KLUIS_DATABASE_URL": u}
	code, out, errOut := runKluis(t, env, "migrate")
	if code != 0 || !strings.Contains(out, "up to date") {
		t.Fatalf("migrate on a migrated database = %d %q %q, want 0 and up to date", code, out, errOut)
	}
}

func TestAuditVerifyNamesTheEntryChangedBehindTheTriggersBack(t *testing.T) {
	db, u := pgtest.Open(t)
	ctx := context.Background()
	a := audit.NewAuditor(db, fixedPseudonyms{}, nil)
	for i := 0; i < 5; i++ {
		if err := a.Record(ctx, audit.Entry{ActorKind: audit.ActorSystem, Actor: "test", Action: "test.step", Outcome: audit.OutcomeSuccess}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := audit.NewSealer(db, 0).SealPending(ctx); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KLUIS_DATABASE_URL": u}
	if code, out, errOut := runKluis(t, env, "audit", "verify"); code != 0 || !strings.Contains(out, "ok, 5 entries") {
		t.Fatalf("verify of a whole chain = %d %q %q", code, out, errOut)
	}
	var victim int64
	owner := pgtest.OpenOwner(t, u) // only the owner can switch the triggers off
	err := owner.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `UPDATE audit_entries SET outcome = 'denied'
			WHERE seq = (SELECT entry_seq FROM audit_chain WHERE pos = 3) RETURNING seq`).Scan(&victim)
	})
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runKluis(t, env, "audit", "verify")
	want := "seq " + itoa(victim)
	if code != 1 || !strings.Contains(out, "BROKEN at entry "+want) || !strings.Contains(errOut, want) {
		t.Fatalf("verify of a tampered chain = %d %q %q, want exit 1 naming %s", code, out, errOut, want)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{nil, {"frobnicate"}, {"jobs"}, {"audit", "fix"}} {
		if code, _, _ := runKluis(t, nil, args...); code != 2 {
			t.Errorf("kluis %v exited %d, want 2", args, code)
		}
	}
}

func TestServeRefusesABadConfigurationNamingEachProblem(t *testing.T) {
	code, _, errOut := runKluis(t, map[string]string{"KLUIS_ENV": "production", "KLUIS_KEY_PROVIDER": "local"}, "serve")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{"KLUIS_DATABASE_URL: is required", "refuses the local root key", "refuses the sandbox provider", "requires mutual TLS"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q does not say %q", errOut, want)
		}
	}
}
