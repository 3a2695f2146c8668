package compliance_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// TestTheServingRoleCanOnlyAppendToTheAuditLog performs break 1 of issue 10
// as the serving role (the role pgtest, like `kluis migrate`, grants exactly
// migrations.ServingGrants), through SQL: it dates an entry in the year
// 2000, lets the sealer chain it, then tries to checkpoint that position
// and delete what lies at or below it, to delete entries still waiting to
// be sealed, to update or truncate any audit table, to switch the triggers
// off, and to trick the sealing function. Each is refused, and the chain
// still verifies whole.
func TestTheServingRoleCanOnlyAppendToTheAuditLog(t *testing.T) {
	app, _ := pgtest.Open(t)
	ctx := context.Background()
	conn, err := app.Pool.Acquire(ctx) // one session, for the temporary table below
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	refused := func(stmt string, args ...any) {
		t.Helper()
		_, err := conn.Exec(ctx, stmt, args...)
		if err == nil {
			t.Errorf("%s as the serving role succeeded, want it refused", stmt)
			return
		}
		if msg := err.Error(); !strings.Contains(msg, "permission denied") && !strings.Contains(msg, "must be owner") {
			t.Errorf("%s: %v, want permission denied", stmt, err)
		}
	}

	// An entry dated in the year 2000: the database dates it now instead.
	var seq int64
	var at time.Time
	err = conn.QueryRow(ctx, `
		INSERT INTO audit_entries (occurred_at, actor_kind, actor, action, outcome)
		VALUES ('2000-01-01T00:00:00Z', 'system', 'attacker', 'attack.backdated', 'success')
		RETURNING seq, occurred_at`).Scan(&seq, &at)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(at) > time.Hour {
		t.Fatalf("the entry is dated %v, as the client asked: the database must date it", at)
	}
	if n, err := audit.NewSealer(app, 0).SealPending(ctx); err != nil || n != 1 {
		t.Fatalf("the sealer chained %d (%v), want 1", n, err)
	}
	var pos int64
	if err := conn.QueryRow(ctx, `SELECT pos FROM audit_chain WHERE entry_seq = $1`, seq).Scan(&pos); err != nil {
		t.Fatal(err)
	}

	// A checkpoint at its position, then the deletes it would allow.
	refused(`INSERT INTO audit_checkpoints (pos, hash, entry_seq, occurred_at, purged)
		SELECT pos, hash, entry_seq, '2000-01-01T00:00:00Z', 0 FROM audit_chain WHERE pos = $1`, pos)
	refused(`DELETE FROM audit_chain WHERE pos <= $1`, pos)
	refused(`DELETE FROM audit_entries WHERE seq <= $1`, seq)
	// The retention purge decides for itself: asked to keep nothing, it
	// keeps a year (and this entry is from today).
	var purged int64
	if err := conn.QueryRow(ctx, `SELECT entries FROM audit_purge('0 seconds', 1000)`).Scan(&purged); err != nil || purged != 0 {
		t.Errorf("audit_purge('0 seconds') purged %d (%v), want 0", purged, err)
	}

	// An entry waiting to be sealed cannot be taken out of the queue.
	var waiting int64
	if err := conn.QueryRow(ctx, `INSERT INTO audit_entries (actor_kind, actor, action, outcome)
		VALUES ('system', 'attacker', 'attack.pending', 'success') RETURNING seq`).Scan(&waiting); err != nil {
		t.Fatal(err)
	}
	refused(`DELETE FROM audit_pending WHERE seq = $1`, waiting)
	refused(`DELETE FROM audit_entries WHERE seq = $1`, waiting)
	refused(`INSERT INTO audit_pending (seq) VALUES (999999)`)
	refused(`INSERT INTO audit_chain (pos, entry_seq, prev_hash, hash, sealed_at) VALUES (999999, $1, '\x00', '\x00', now())`, waiting)

	// No update, truncate, or switching the triggers off, on any audit table.
	for _, table := range []string{"audit_entries", "audit_chain", "audit_pending", "audit_checkpoints"} {
		refused(`UPDATE ` + table + ` SET ` + map[string]string{
			"audit_entries": "action = 'forged'", "audit_chain": "hash = sha256(hash)",
			"audit_pending": "seq = seq", "audit_checkpoints": "purged = 0",
		}[table])
		refused(`DELETE FROM ` + table)
		refused(`TRUNCATE ` + table + ` CASCADE`)
		refused(`ALTER TABLE ` + table + ` DISABLE TRIGGER ALL`)
	}
	refused(`ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_stamp`)
	refused(`SET session_replication_role = replica`)
	refused(`DROP FUNCTION audit_seal(integer)`)
	refused(`CREATE OR REPLACE FUNCTION audit_seal(max_entries integer) RETURNS integer LANGUAGE sql AS 'SELECT 0'`)

	// A temporary table named like the queue does not fool the sealing
	// function (its search_path puts pg_temp last, and it names its tables).
	if _, err := conn.Exec(ctx, `CREATE TEMP TABLE audit_pending (seq bigint)`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT audit_seal(100)`).Scan(&n); err != nil || n != 1 {
		t.Errorf("audit_seal beside a temporary audit_pending chained %d (%v), want the 1 real pending entry", n, err)
	}

	res, err := audit.Verify(ctx, app)
	if err != nil || !res.OK || res.Entries != 2 || res.Unsealed != 0 {
		t.Fatalf("verify = %+v, %v; want ok with both entries", res, err)
	}
}
