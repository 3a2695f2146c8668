package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// TestAuditVerifyChecksAHeadKeptOutsideTheDatabase: compliance staff send a
// head kept elsewhere; a good one passes, and once the owner has wiped and
// rebuilt the audit log the route no longer answers ok, naming the problem.
// A forged signature fails; a malformed head is 400.
func TestAuditVerifyChecksAHeadKeptOutsideTheDatabase(t *testing.T) {
	env := apitest.Start(t)
	ctx := context.Background()
	console := env.ServiceClient(t, "compliance-console")
	url := env.Internal.URL + "/compliance/v1/audit/verify"
	staff := jwttest.StaffToken(t)
	appendSealed := func(n int) {
		for i := 0; i < n; i++ {
			if err := env.Deps.Auditor.Record(ctx, audit.Entry{ActorKind: audit.ActorSystem, Actor: "test", Action: "test.step", Outcome: audit.OutcomeSuccess}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := audit.NewSealer(env.DB, 0).SealPending(ctx); err != nil {
			t.Fatal(err)
		}
	}
	verify := func(head audit.Head) (int, map[string]any) {
		t.Helper()
		raw, _ := json.Marshal(map[string]any{"head": head})
		status, _, body := apitest.Do(t, console, "POST", url, staff, "application/json", string(raw))
		var out map[string]any
		_ = json.Unmarshal([]byte(body), &out)
		return status, out
	}
	appendSealed(3)
	kept, err := audit.CurrentHead(ctx, env.DB, env.System)
	if err != nil {
		t.Fatal(err)
	}
	if status, out := verify(kept); status != 200 || out["ok"] != true || out["head_status"] != "extended" {
		t.Fatalf("verify against a good head = %d %v", status, out)
	}

	forged := kept
	forged.Sig = "v1:" + strings.Repeat("A", 43)
	if status, out := verify(forged); status != 200 || out["ok"] != false || out["problem"] != "head_signature" {
		t.Fatalf("verify against a forged head = %d %v", status, out)
	}

	owner := pgtest.OpenOwner(t, env.DBURL)
	err = owner.InTx(ctx, func(tx pgx.Tx) error {
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
	status, out := verify(kept)
	if status != 200 || out["ok"] != false || out["problem"] != "head" || !strings.Contains(out["reason"].(string), "position 3") {
		t.Fatalf("verify of the rebuilt chain against the kept head = %d %v", status, out)
	}

	status, _, body := apitest.Do(t, console, "POST", url, staff, "application/json", `{"head": {"pos": 1, "hash": "zz", "at": "2026-01-01T00:00:00Z", "sig": "v1:x"}}`)
	if status != 400 || !strings.Contains(body, `"invalid_request"`) {
		t.Fatalf("a malformed head = %d %s, want 400", status, body)
	}
	status, _, body = apitest.Do(t, console, "POST", url, staff, "application/json", `{"head": {"pos": 1}, "extra": true}`)
	if status != 400 {
		t.Fatalf("an unknown field = %d %s, want 400", status, body)
	}
}
