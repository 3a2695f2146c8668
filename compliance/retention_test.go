package compliance_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/audit/audittest"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
)

// classes is every feature's retention classes, registered as kluis
// registers them.
var classes = func() *compliance.Registry {
	r, err := config.RetentionRegistry()
	if err != nil {
		panic(err)
	}
	return r
}()

// fixedClock is an injected clock.
type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

// row names one inserted row: its table, and a WHERE that finds it.
type row struct {
	table, where string
	arg          any
}

func (r row) exists(t *testing.T, db *postgres.DB) bool {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), fmt.Sprintf("SELECT count(*) FROM %s WHERE %s", r.table, r.where), r.arg).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", r.table, err)
	}
	return n > 0
}

func exec(t *testing.T, db *postgres.DB, sql string, args ...any) {
	t.Helper()
	if _, err := db.Pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func newSubject(t *testing.T, db *postgres.DB, external string) string {
	t.Helper()
	id, err := vault.EnsureSubject(context.Background(), db.Pool, external)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// fixtures insert one row of a class, as old as at says, for the subject
// (nil for classes whose rows belong to no one).
var fixtures = map[string]func(t *testing.T, db *postgres.DB, at time.Time, subject string) row{
	"hosted_pages": func(t *testing.T, db *postgres.DB, at time.Time, subject string) row {
		id := kluis.NewID("hpg_")
		hash := make([]byte, 32)
		copy(hash, id)
		exec(t, db, `INSERT INTO hosted_pages (id, subject_id, purpose, object_id, token_hash, expires_at, created_at, updated_at)
			VALUES ($1, $2, 'link', $3, $4, $5, $5, $5)`, id, subject, kluis.NewID(kluis.PrefixLinkSession), hash, at)
		return row{"hosted_pages", "id = $1", id}
	},
	"link_sessions": func(t *testing.T, db *postgres.DB, at time.Time, subject string) row {
		id := kluis.NewID(kluis.PrefixLinkSession)
		exec(t, db, `INSERT INTO link_sessions (id, subject_id, provider, mode, status, expires_at, created_at, updated_at)
			VALUES ($1, $2, 'sandbox', 'new', 'exited', $3, $3, $3)`, id, subject, at)
		return row{"link_sessions", "id = $1", id}
	},
	"provider_webhook_events": func(t *testing.T, db *postgres.DB, at time.Time, subject string) row {
		item := removedItem(t, db, subject, time.Now())
		var id int64
		err := db.Pool.QueryRow(context.Background(), `INSERT INTO provider_webhook_events (provider, event_id, kind, item_id, outcome, received_at)
			VALUES ('sandbox', $1, 'revoked', $2, 'applied', $3) RETURNING id`, kluis.NewID("evt_"), item, at).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		return row{"provider_webhook_events", "id = $1", id}
	},
	"verifications": func(t *testing.T, db *postgres.DB, at time.Time, subject string) row {
		acc := kluis.NewID(kluis.PrefixAccount)
		exec(t, db, `INSERT INTO accounts (id, subject_id, name, mask) VALUES ($1, $2, 'cheque', '1234')`, acc, subject)
		id := kluis.NewID(kluis.PrefixVerification)
		exec(t, db, `INSERT INTO verifications (id, subject_id, account_id, requested_method, method, status, attempts_remaining,
			expires_at, created_at, updated_at, finished_at, app_id) VALUES ($1, $2, $3, 'instant', 'instant', 'verified', 3, $4, $4, $4, $4, 'default')`,
			id, subject, acc, at)
		return row{"verifications", "id = $1", id}
	},
	compliance.VerificationFailuresClass: func(t *testing.T, db *postgres.DB, at time.Time, subject string) row {
		id := kluis.NewID(kluis.PrefixVerification)
		exec(t, db, `INSERT INTO verification_failures (verification_id, subject_id, account_id, failed_at, app_id)
			VALUES ($1, $2, $3, $4, 'default')`, id, subject, kluis.NewID(kluis.PrefixAccount), at)
		return row{"verification_failures", "verification_id = $1", id}
	},
	"removed_accounts": func(t *testing.T, db *postgres.DB, at time.Time, subject string) row {
		id := kluis.NewID(kluis.PrefixAccount)
		exec(t, db, `INSERT INTO accounts (id, subject_id, name, mask, removed_at) VALUES ($1, $2, 'cheque', '1234', $3)`, id, subject, at)
		return row{"accounts", "id = $1", id}
	},
	"removed_items": func(t *testing.T, db *postgres.DB, at time.Time, subject string) row {
		return row{"items", "id = $1", removedItem(t, db, subject, at)}
	},
	"revoked_accounts": func(t *testing.T, db *postgres.DB, at time.Time, subject string) row {
		id := kluis.NewID(kluis.PrefixAccount)
		exec(t, db, `INSERT INTO accounts (id, subject_id, name, mask, status, revoked_at) VALUES ($1, $2, 'cheque', '1234', 'revoked', $3)`, id, subject, at)
		return row{"accounts", "id = $1", id}
	},
	"revoked_items": func(t *testing.T, db *postgres.DB, at time.Time, subject string) row {
		// Its token's tombstone is young, so the credentials class keeps
		// it in the same run: each class's count stays its own.
		ref := tombstone(t, db, subject, time.Now())
		id := kluis.NewID(kluis.PrefixItem)
		exec(t, db, `INSERT INTO items (id, subject_id, provider, provider_item_id, institution_id, institution_name, status, credential_ref, updated_at)
			VALUES ($1, $2, 'sandbox', $3, 'ins_sandbox', 'Sandbox Bank', 'revoked', $4, $5)`, id, subject, kluis.NewID("pi_"), ref, at)
		return row{"items", "id = $1", id}
	},
	"revoked_credentials": func(t *testing.T, db *postgres.DB, at time.Time, subject string) row {
		return row{"credentials", "ref = $1", tombstone(t, db, subject, at)}
	},
	"outbox_events": func(t *testing.T, db *postgres.DB, at time.Time, _ string) row {
		id := kluis.NewID("evt_")
		exec(t, db, `INSERT INTO outbox (id, type, payload, created_at, fanned_out) VALUES ($1, 'item.removed', '{}', $2, true)`, id, at)
		return row{"outbox", "id = $1", id}
	},
	"idempotency_keys": func(t *testing.T, db *postgres.DB, at time.Time, _ string) row {
		key := []byte(kluis.NewID("k_"))
		exec(t, db, `INSERT INTO idempotency_keys (scope_hash, key_hash, fingerprint, status, lock_token, locked_until, created_at, expires_at)
			VALUES ('s', $1, 'f', 'in_progress', 'l', $2, $2, $2)`, key, at)
		return row{"idempotency_keys", "key_hash = $1", key}
	},
	"job_runs": func(t *testing.T, db *postgres.DB, at time.Time, _ string) row {
		var id int64
		err := db.Pool.QueryRow(context.Background(), `INSERT INTO job_runs (job, instance, started_at, finished_at, outcome)
			VALUES ('test', 'test', $1, $1, 'succeeded') RETURNING id`, at).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		return row{"job_runs", "id = $1", id}
	},
}

// tombstone inserts what a revoked credential leaves: its row without a
// secret, revoked at at.
func tombstone(t *testing.T, db *postgres.DB, subject string, at time.Time) string {
	t.Helper()
	ref := kluis.NewID(kluis.PrefixCredential)
	exec(t, db, `INSERT INTO credentials (ref, subject_id, kind, key_version, envelope, revoked_at, owner_type, owner_id)
		VALUES ($1, $2, 'bank_access_token', 1, NULL, $3, 'item', $4)`, ref, subject, at, kluis.NewID(kluis.PrefixItem))
	return ref
}

func removedItem(t *testing.T, db *postgres.DB, subject string, at time.Time) string {
	t.Helper()
	id := kluis.NewID(kluis.PrefixItem)
	exec(t, db, `INSERT INTO items (id, subject_id, provider, provider_item_id, institution_id, institution_name, status, removed_at)
		VALUES ($1, $2, 'sandbox', $3, 'ins_sandbox', 'Sandbox Bank', 'removed', $4)`, id, subject, kluis.NewID("pi_"), at)
	return id
}

func TestEachRetentionClassPurgesWhatIsPastItsPeriodAndKeepsTheRest(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	clock := fixedClock{now}
	auditor := audit.NewAuditor(db, audittest.Pseudonyms{}, clock)
	svc := compliance.NewService(db, auditor, nil, clock)
	purger := compliance.NewPurger(db, auditor, clock, nil, classes)
	// The audit fixture comes first: its old entries must head the chain.
	auditRows := auditFixture(t, db, purger, now)
	free := newSubject(t, db, "user-free")
	heldSub := newSubject(t, db, "user-held")
	if _, err := svc.PlaceHold(ctx, compliance.Staff{ID: "staff_a"}, "user-held", "CASE-1"); err != nil {
		t.Fatal(err)
	}

	type rows struct{ old, young, held row }
	made := map[string]rows{}
	for _, c := range classes.Classes() {
		fx, ok := fixtures[c.Name]
		if !ok {
			if c.Name != compliance.AuditClass {
				t.Errorf("retention class %s has no fixture in this test", c.Name)
			}
			continue
		}
		p := purger.Period(c)
		r := rows{old: fx(t, db, now.Add(-p-time.Hour), free), young: fx(t, db, now.Add(-p+time.Hour), free)}
		if c.Subject != "" {
			r.held = fx(t, db, now.Add(-p-time.Hour), heldSub)
		}
		made[c.Name] = r
	}

	dry, err := purger.Purge(ctx, compliance.PurgeOptions{DryRun: true, Batch: 2})
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	for _, cr := range dry.Classes {
		if cr.Skipped != "" {
			t.Errorf("%s skipped: %s", cr.Class, cr.Skipped)
		}
		if cr.Deleted != 1 {
			t.Errorf("dry run: %s would delete %d, want 1", cr.Class, cr.Deleted)
		}
	}
	for name, r := range made {
		if !r.old.exists(t, db) {
			t.Errorf("dry run deleted an old %s row", name)
		}
	}

	rep, err := purger.Purge(ctx, compliance.PurgeOptions{Batch: 2})
	if err != nil {
		t.Fatalf("purge: %v", err)
	}
	for _, cr := range rep.Classes {
		if cr.Deleted != 1 {
			t.Errorf("purge: %s deleted %d, want 1", cr.Class, cr.Deleted)
		}
	}
	for name, r := range made {
		t.Run(name, func(t *testing.T) {
			if r.old.exists(t, db) {
				t.Error("a row past its period is still there")
			}
			if !r.young.exists(t, db) {
				t.Error("a row within its period was purged")
			}
			if r.held.table != "" && !r.held.exists(t, db) {
				t.Error("a held subject's row was purged")
			}
		})
	}
	auditRows.check(t, db)

	again, err := purger.Purge(ctx, compliance.PurgeOptions{Batch: 2})
	if err != nil {
		t.Fatalf("second purge: %v", err)
	}
	for _, cr := range again.Classes {
		if cr.Deleted != 0 {
			t.Errorf("second purge: %s deleted %d more", cr.Class, cr.Deleted)
		}
	}
	res, err := audit.Verify(ctx, db)
	if err != nil || !res.OK {
		t.Fatalf("verify after purges: %+v, %v", res, err)
	}
	if res.Checkpoint == nil || res.Checkpoint.Purged != 1 {
		t.Errorf("verify does not report the checkpoint: %+v", res.Checkpoint)
	}
}

// auditRows are audit entries written at chosen times: the oldest is past
// its period, the held one names a held subject, and the rest follow it.
type auditRows struct {
	old, held, after, young int64
}

func auditFixture(t *testing.T, db *postgres.DB, purger *compliance.Purger, now time.Time) auditRows {
	t.Helper()
	ctx := context.Background()
	var class compliance.RetentionClass
	for _, c := range classes.Classes() {
		if c.Name == compliance.AuditClass {
			class = c
		}
	}
	p := purger.Period(class)
	owner := ownerOf(t, db)
	write := func(at time.Time, subject string) int64 {
		a := audit.NewAuditor(db, audittest.Pseudonyms{}, nil)
		if err := a.Record(ctx, audit.Entry{ActorKind: audit.ActorSystem, Actor: "test", Action: "test.entry",
			Outcome: audit.OutcomeSuccess, Subject: subject}); err != nil {
			t.Fatal(err)
		}
		var seq int64
		if err := db.Pool.QueryRow(ctx, `SELECT max(seq) FROM audit_entries`).Scan(&seq); err != nil {
			t.Fatal(err)
		}
		audittest.Backdate(t, owner, seq, at)
		return seq
	}
	r := auditRows{}
	r.old = write(now.Add(-p-3*time.Hour), "user-free")
	r.held = write(now.Add(-p-2*time.Hour), "user-held")
	r.after = write(now.Add(-p-time.Hour), "user-free")
	r.young = write(now.Add(-p+time.Hour), "user-free")
	seal(t, db)
	return r
}

// ownerOf opens db's database as its owner, for tests that play an
// attacker with the owner's rights.
func ownerOf(t testing.TB, db *postgres.DB) *postgres.DB {
	t.Helper()
	return pgtest.OpenOwner(t, db.Pool.Config().ConnString())
}

func seal(t *testing.T, db *postgres.DB) {
	t.Helper()
	if _, err := audit.NewSealer(db, 0).SealPending(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (r auditRows) check(t *testing.T, db *postgres.DB) {
	t.Helper()
	has := func(seq int64) bool { return row{"audit_entries", "seq = $1", seq}.exists(t, db) }
	if has(r.old) {
		t.Error("audit: an entry past its period is still there")
	}
	if !has(r.held) {
		t.Error("audit: an entry about a held subject was purged")
	}
	if !has(r.after) {
		t.Error("audit: an entry behind a held one was purged (the chain can only lose its head)")
	}
	if !has(r.young) {
		t.Error("audit: an entry within its period was purged")
	}
}

func TestAClassWhoseTableDoesNotExistIsSkippedWithANote(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	exec(t, ownerOf(t, db), `ALTER TABLE job_runs RENAME TO job_runs_elsewhere`)
	purger := compliance.NewPurger(db, audit.NewAuditor(db, audittest.Pseudonyms{}, nil), nil, nil, classes)
	rep, err := purger.Purge(ctx, compliance.PurgeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cr := range rep.Classes {
		if cr.Class == "job_runs" && cr.Skipped == "" {
			t.Errorf("job_runs ran against a missing table: %+v", cr)
		}
	}
}

func TestThePurgeDeletesInBatchesOfTheGivenSize(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	now := time.Now().UTC()
	for i := 0; i < 7; i++ {
		fixtures["job_runs"](t, db, now.Add(-100*24*time.Hour), "")
	}
	purger := compliance.NewPurger(db, audit.NewAuditor(db, audittest.Pseudonyms{}, nil), fixedClock{now}, nil, classes)
	rep, err := purger.Purge(ctx, compliance.PurgeOptions{Batch: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, cr := range rep.Classes {
		if cr.Class == "job_runs" && (cr.Deleted != 7 || cr.Batches != 3) {
			t.Errorf("job_runs: deleted %d in %d batches, want 7 in 3", cr.Deleted, cr.Batches)
		}
	}
}

// TestTheDatabaseRefusesAuditDeletesWithoutACheckpoint: even the owner,
// whose privileges allow the deletes, meets the triggers.
func TestTheDatabaseRefusesAuditDeletesWithoutACheckpoint(t *testing.T) {
	serving, _ := pgtest.Open(t)
	db := ownerOf(t, serving)
	ctx := context.Background()
	a := audit.NewAuditor(serving, audittest.Pseudonyms{}, nil)
	if err := a.Record(ctx, audit.Entry{ActorKind: audit.ActorSystem, Actor: "t", Action: "t.x", Outcome: audit.OutcomeSuccess}); err != nil {
		t.Fatal(err)
	}
	audittest.Backdate(t, db, 1, time.Now().Add(-500*24*time.Hour))
	seal(t, serving)
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM audit_chain WHERE pos = 1`)
		return err
	})
	if err == nil {
		t.Fatal("a chain link was deleted without a checkpoint")
	}
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO audit_checkpoints (pos, hash, entry_seq, occurred_at, purged) VALUES (1, '\x00', 1, now(), 1)`)
		return err
	})
	if err == nil {
		t.Fatal("a checkpoint that does not match the chain was accepted")
	}
}

// Issue 10: a link session whose unstored token was never confirmed
// revoked is the erasure's record that access may be live: the purge keeps
// it however old, and purges its neighbour.
func TestThePurgeKeepsALinkSessionWhoseRevokeFailed(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	now := time.Now().UTC()
	sid := newSubject(t, db, "user-revoke-failed")
	old := now.Add(-400 * 24 * time.Hour)
	kept := fixtures["link_sessions"](t, db, old, sid)
	exec(t, db, `UPDATE link_sessions SET revoke_failed_at = $2 WHERE id = $1`, kept.arg, old)
	gone := fixtures["link_sessions"](t, db, old, sid)
	purger := compliance.NewPurger(db, audit.NewAuditor(db, audittest.Pseudonyms{}, nil), fixedClock{now}, nil, classes)
	if _, err := purger.Purge(ctx, compliance.PurgeOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, `SELECT count(*) FROM link_sessions WHERE id = $1`, kept.arg); n != 1 {
		t.Errorf("the revoke_failed session was purged")
	}
	if n := count(t, db, `SELECT count(*) FROM link_sessions WHERE id = $1`, gone.arg); n != 0 {
		t.Errorf("its old neighbour was kept")
	}
}
