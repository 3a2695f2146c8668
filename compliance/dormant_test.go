package compliance_test

import (
	"context"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/audit/audittest"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// lastSeen backdates a subject's creation and last request.
func lastSeen(t *testing.T, db *postgres.DB, subjectID string, at time.Time) {
	t.Helper()
	exec(t, db, `UPDATE subjects SET created_at = $2, last_seen_at = $2 WHERE id = $1`, subjectID, at)
}

func TestDormantSubjectsAreErasedThroughThePipelineAndHeldOrActiveOnesKept(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	now := time.Now().UTC()
	clock := fixedClock{now}
	auditor := audit.NewAuditor(db, audittest.Pseudonyms{}, clock)
	svc := compliance.NewService(db, auditor, tableShredder{}, clock)
	const period = 365 * 24 * time.Hour
	old := now.Add(-period - 24*time.Hour)

	ids := map[string]string{}
	for _, sub := range []string{"user-dormant", "user-looked-at", "user-revealed", "user-held", "user-seen"} {
		ids[sub] = newSubject(t, db, sub)
		exec(t, db, `INSERT INTO keystore.subject_keys (id, subject_id, version, wrapped) VALUES ($1, $2, 1, '\x00')`, "sk_"+sub, ids[sub])
		lastSeen(t, db, ids[sub], old)
	}
	lastSeen(t, db, ids["user-seen"], now.Add(-time.Hour))
	// A service revealed one person's credential recently; staff only
	// looked at another's access report, which keeps no one.
	for _, e := range []audit.Entry{
		{ActorKind: audit.ActorService, Actor: "payments", Action: "credential.reveal", Outcome: audit.OutcomeSuccess, Subject: "user-revealed"},
		{ActorKind: audit.ActorStaff, Actor: "staff_a", Action: "subject.access_report", Outcome: audit.OutcomeSuccess, Subject: "user-looked-at"},
	} {
		if err := auditor.Record(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.PlaceHold(ctx, compliance.Staff{ID: "staff_a"}, "user-held", "CASE-7"); err != nil {
		t.Fatal(err)
	}

	dry, err := svc.EraseDormant(ctx, period, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if want := (compliance.DormantReport{Erased: 2, Held: 1, Active: 1}); dry != want {
		t.Errorf("dry run = %+v, want %+v", dry, want)
	}
	if n := count(t, db, `SELECT count(*) FROM erasure_requests`); n != 0 {
		t.Fatalf("the dry run opened %d erasures", n)
	}

	rep, err := svc.EraseDormant(ctx, period, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := (compliance.DormantReport{Erased: 2, Held: 1, Active: 1}); rep != want {
		t.Errorf("run = %+v, want %+v", rep, want)
	}
	for sub, gone := range map[string]bool{"user-dormant": true, "user-looked-at": true, "user-revealed": false, "user-held": false, "user-seen": false} {
		subjects := count(t, db, `SELECT count(*) FROM subjects WHERE id = $1`, ids[sub])
		keys := count(t, db, `SELECT count(*) FROM keystore.subject_keys WHERE subject_id = $1`, ids[sub])
		if gone && (subjects != 0 || keys != 0) {
			t.Errorf("%s: dormant but kept (%d subject rows, %d keys)", sub, subjects, keys)
		}
		if !gone && (subjects != 1 || keys != 1) {
			t.Errorf("%s: erased though it should be kept", sub)
		}
	}
	// The erasures went through the pipeline: completed, with receipts,
	// requested and approved by the system's two names, audited.
	if n := count(t, db, `SELECT count(*) FROM erasure_requests WHERE status = 'completed'
		AND requested_by = 'system:retention-purge' AND approved_by = 'system:retention-policy' AND receipt IS NOT NULL`); n != 2 {
		t.Errorf("%d completed dormant erasures, want 2", n)
	}
	if n := count(t, db, `SELECT count(*) FROM audit_entries WHERE action = 'erasure.approve' AND actor = 'system:retention-policy'`); n != 2 {
		t.Errorf("%d audited approvals, want 2", n)
	}
	// The revealed subject counts as seen from that reveal on.
	if n := count(t, db, `SELECT count(*) FROM subjects WHERE id = $1 AND last_seen_at > $2`, ids["user-revealed"], old); n != 1 {
		t.Error("the revealed subject's last_seen_at did not move up")
	}

	again, err := svc.EraseDormant(ctx, period, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := (compliance.DormantReport{Held: 1}); again != want {
		t.Errorf("second run = %+v, want %+v", again, want)
	}
}

func TestConcurrentDormantRunsEraseEachSubjectOnce(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	now := time.Now().UTC()
	auditor := audit.NewAuditor(db, audittest.Pseudonyms{}, fixedClock{now})
	svc := compliance.NewService(db, auditor, tableShredder{}, fixedClock{now})
	for _, sub := range []string{"user-a", "user-b", "user-c", "user-d"} {
		lastSeen(t, db, newSubject(t, db, sub), now.Add(-400*24*time.Hour))
	}
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			_, err := svc.EraseDormant(ctx, 365*24*time.Hour, 0, false)
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("a concurrent run failed: %v", err)
		}
	}
	if n := count(t, db, `SELECT count(*) FROM erasure_requests`); n != 4 {
		t.Errorf("%d erasure requests for 4 dormant subjects", n)
	}
	if n := count(t, db, `SELECT count(*) FROM subjects`); n != 0 {
		t.Errorf("%d subjects left", n)
	}
}
