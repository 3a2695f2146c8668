package compliance_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/audit/audittest"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// refusingLiveRevoker never revokes its one item, and counts as live
// whatever the test says (the item, plus an exchange in flight, say).
type refusingLiveRevoker struct{ live atomic.Int32 }

func (r *refusingLiveRevoker) RevokeSubject(context.Context, string, compliance.RevokeFence) (compliance.Revocation, error) {
	return compliance.Revocation{Unrevoked: []compliance.UnrevokedItem{{ItemID: "itm_refused", Provider: "sandbox", Reason: kluis.EUnavailable}}}, nil
}

func (r *refusingLiveRevoker) Live(context.Context, pgx.Tx, string) (int, error) {
	return int(r.live.Load()), nil
}

// A completion with exceptions must not destroy the keys while something
// is live that the staff did not accept to leave unrevoked (an exchange
// in flight): 409, audited, keys intact; once only the named item is
// live, it completes.
func TestCompletionWithExceptionsRefusesWhatIsLiveBeyondTheUnrevokedItems(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	svc := compliance.NewService(db, audit.NewAuditor(db, audittest.Pseudonyms{}, nil), tableShredder{}, nil)
	rev := &refusingLiveRevoker{}
	rev.live.Store(2) // the refused item and an exchange in flight
	svc.AddRevoker(rev)
	svc.SetRevokeAttempts(1)
	sid := newSubject(t, db, "user-live-exception")
	exec(t, db, `INSERT INTO keystore.subject_keys (id, subject_id, version, wrapped) VALUES ('sk_1', $1, 1, '\x00')`, sid)
	r, err := svc.RequestErasure(ctx, compliance.Staff{ID: "staff_a"}, "user-live-exception", "T-10")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = svc.ApproveErasure(ctx, compliance.Staff{ID: "staff_b"}, r.ID)
	if got, err := svc.GetErasure(ctx, r.ID); err != nil || got.Status != compliance.ErasureNeedsAttention {
		t.Fatalf("erasure = %+v, %v; want needs_attention", got, err)
	}
	if _, err := svc.CompleteWithExceptions(ctx, compliance.Staff{ID: "staff_c"}, r.ID); err != nil {
		t.Fatalf("acknowledge = %v", err)
	}
	if _, err := svc.CompleteWithExceptions(ctx, compliance.Staff{ID: "staff_d"}, r.ID); kluis.ErrorCode(err) != kluis.EConflict {
		t.Fatalf("complete with an exchange in flight = %v, want %s", err, kluis.EConflict)
	}
	if n := count(t, db, `SELECT count(*) FROM keystore.subject_keys WHERE subject_id = $1`, sid); n != 1 {
		t.Fatalf("keys left after the refused completion = %d, want 1", n)
	}
	if n := count(t, db, `SELECT count(*) FROM audit_entries WHERE action = 'erasure.complete_with_exceptions' AND outcome = 'denied' AND details->>'reason' = 'still_live'`); n != 1 {
		t.Errorf("refused completions audited = %d, want 1", n)
	}
	rev.live.Store(1) // the exchange ended; only the named item is live
	got, err := svc.CompleteWithExceptions(ctx, compliance.Staff{ID: "staff_d"}, r.ID)
	if err != nil || got.Status != compliance.ErasureCompletedWithExceptions {
		t.Fatalf("complete = %+v, %v", got, err)
	}
}
