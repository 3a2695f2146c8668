package compliance_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/audit/audittest"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// downRevoker is a provider that cannot be reached until up is set.
type downRevoker struct{ up bool }

func (r *downRevoker) RevokeSubject(context.Context, string, compliance.RevokeFence) (compliance.Revocation, error) {
	if !r.up {
		return compliance.Revocation{}, kluis.Unavailable("bank provider", errors.New("down"))
	}
	return compliance.Revocation{}, nil
}

func (r *downRevoker) Live(context.Context, pgx.Tx, string) (int, error) { return 0, nil }

func TestAHoldPlacedAfterApprovalStopsTheErasureUntilItIsLifted(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	auditor := audit.NewAuditor(db, audittest.Pseudonyms{}, nil)
	svc := compliance.NewService(db, auditor, tableShredder{}, nil)
	rev := &downRevoker{}
	svc.AddRevoker(rev)
	sid := newSubject(t, db, "user-held-later")
	exec(t, db, `INSERT INTO keystore.subject_keys (id, subject_id, version, wrapped) VALUES ('sk_1', $1, 1, '\x00')`, sid)

	r, err := svc.RequestErasure(ctx, compliance.Staff{ID: "staff_a"}, "user-held-later", "T-1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := svc.ApproveErasure(ctx, compliance.Staff{ID: "staff_b"}, r.ID)
	if err != nil || got.Status != compliance.ErasureApproved {
		t.Fatalf("approve with the provider down = %+v, %v; want approved", got, err)
	}
	hold, err := svc.PlaceHold(ctx, compliance.Staff{ID: "staff_c"}, "user-held-later", "CASE-9")
	if err != nil {
		t.Fatal(err)
	}
	rev.up = true

	if n, err := svc.ResumeErasures(ctx); err != nil || n != 0 {
		t.Fatalf("resume under a hold = %d, %v; want nothing done and no error", n, err)
	}
	if _, err := svc.ApproveErasure(ctx, compliance.Staff{ID: "staff_b"}, r.ID); kluis.ErrorCode(err) != compliance.ELegalHold {
		t.Fatalf("approving again under a hold = %v, want %s", err, compliance.ELegalHold)
	}
	if n := count(t, db, `SELECT count(*) FROM keystore.subject_keys WHERE subject_id = $1`, sid); n != 1 {
		t.Fatalf("the held subject's keys were destroyed: %d left", n)
	}
	if got, _ := svc.GetErasure(ctx, r.ID); got.Status != compliance.ErasureApproved {
		t.Fatalf("status under a hold = %s, want approved", got.Status)
	}

	if err := svc.LiftHold(ctx, compliance.Staff{ID: "staff_c"}, hold.ID); err != nil {
		t.Fatal(err)
	}
	if n, err := svc.ResumeErasures(ctx); err != nil || n != 1 {
		t.Fatalf("resume after the hold is lifted = %d, %v", n, err)
	}
	if n := count(t, db, `SELECT count(*) FROM subjects WHERE id = $1`, sid); n != 0 {
		t.Errorf("the subject was not erased after the hold was lifted")
	}
}

func TestAKeyMadeBetweenTheShredAndTheDeleteIsDestroyedToo(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	auditor := audit.NewAuditor(db, audittest.Pseudonyms{}, nil)
	svc := compliance.NewService(db, auditor, tableShredder{}, nil)
	sid := newSubject(t, db, "user-racing-seal")
	exec(t, db, `INSERT INTO keystore.subject_keys (id, subject_id, version, wrapped) VALUES ('sk_1', $1, 1, '\x00')`, sid)
	r, err := svc.RequestErasure(ctx, compliance.Staff{ID: "staff_a"}, "user-racing-seal", "T-2")
	if err != nil {
		t.Fatal(err)
	}
	compliance.SetStepHook(svc, func(step string) error {
		if step == compliance.StepShred {
			// A request of the subject's seals a record right after the shred.
			exec(t, db, `INSERT INTO keystore.subject_keys (id, subject_id, version, wrapped) VALUES ('sk_2', $1, 1, '\x01')`, sid)
		}
		return nil
	})
	got, err := svc.ApproveErasure(ctx, compliance.Staff{ID: "staff_b"}, r.ID)
	if err != nil || got.Status != compliance.ErasureCompleted {
		t.Fatalf("approve = %+v, %v", got, err)
	}
	if n := count(t, db, `SELECT count(*) FROM keystore.subject_keys WHERE subject_id = $1`, sid); n != 0 {
		t.Errorf("%d subject keys outlived the erasure", n)
	}
}
