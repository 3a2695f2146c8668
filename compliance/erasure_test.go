package compliance_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/audit/audittest"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// tableShredder destroys subject keys as the vault's key ring does.
type tableShredder struct{}

func (tableShredder) DestroySubjectKeys(ctx context.Context, tx pgx.Tx, subjectID string) (int, error) {
	tag, err := tx.Exec(ctx, `DELETE FROM keystore.subject_keys WHERE subject_id = $1`, subjectID)
	return int(tag.RowsAffected()), err
}

// countingRevoker revokes two items, recording each through the fence as
// bank linking does, and counts its calls.
type countingRevoker struct {
	db    *postgres.DB
	calls int
}

func (r *countingRevoker) RevokeSubject(ctx context.Context, _ string, fence compliance.RevokeFence) (compliance.Revocation, error) {
	r.calls++
	for _, id := range []string{"itm_a", "itm_b"} {
		if err := r.db.InTx(ctx, func(tx pgx.Tx) error { return fence(ctx, tx, id, true) }); err != nil {
			return compliance.Revocation{}, err
		}
	}
	return compliance.Revocation{}, nil
}

func (r *countingRevoker) Live(context.Context, pgx.Tx, string) (int, error) { return 0, nil }

var errCrash = errors.New("killed")

func count(t *testing.T, db *postgres.DB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAKilledErasureCompletesOnTheNextRunWithoutRepeatingItsSteps(t *testing.T) {
	for _, killAfter := range []string{compliance.StepRevoke, compliance.StepShred} {
		t.Run("killed after "+killAfter, func(t *testing.T) {
			db, _ := pgtest.Open(t)
			ctx := context.Background()
			auditor := audit.NewAuditor(db, audittest.Pseudonyms{}, nil)
			svc := compliance.NewService(db, auditor, tableShredder{}, nil)
			rev := &countingRevoker{db: db}
			svc.AddRevoker(rev)
			sid := newSubject(t, db, "user-killed")
			exec(t, db, `INSERT INTO keystore.subject_keys (id, subject_id, version, wrapped) VALUES ('sk_1', $1, 1, '\x00')`, sid)
			exec(t, db, `INSERT INTO credentials (ref, subject_id, kind, key_version, envelope) VALUES ('cred_1', $1, 'account_number', 1, '\x00')`, sid)

			r, err := svc.RequestErasure(ctx, compliance.Staff{ID: "staff_a"}, "user-killed", "T-1")
			if err != nil {
				t.Fatal(err)
			}
			compliance.SetStepHook(svc, func(step string) error {
				if step == killAfter {
					return errCrash
				}
				return nil
			})
			if _, err := svc.ApproveErasure(ctx, compliance.Staff{ID: "staff_b"}, r.ID); !errors.Is(err, errCrash) {
				t.Fatalf("approve = %v, want the crash", err)
			}
			got, err := svc.GetErasure(ctx, r.ID)
			if err != nil || got.Status != compliance.ErasureApproved {
				t.Fatalf("after the crash: %+v, %v", got, err)
			}
			if n := count(t, db, `SELECT count(*) FROM credentials WHERE subject_id = $1`, sid); n != 1 {
				t.Fatalf("rows deleted before the delete step: %d left", n)
			}

			compliance.SetStepHook(svc, nil)
			if n, err := svc.ResumeErasures(ctx); err != nil || n != 1 {
				t.Fatalf("resume = %d, %v", n, err)
			}
			got, _ = svc.GetErasure(ctx, r.ID)
			if got.Status != compliance.ErasureCompleted || got.Receipt == nil {
				t.Fatalf("after resume: %+v", got)
			}
			if rev.calls != 1 {
				t.Errorf("the provider was asked to revoke %d times, want once", rev.calls)
			}
			if got.Receipt.ProviderItemsRevoked != 2 || got.Receipt.SubjectKeysDestroyed != 1 || got.Receipt.Erased["credentials"] != 1 {
				t.Errorf("receipt = %+v", got.Receipt)
			}
			if n := count(t, db, `SELECT count(*) FROM keystore.subject_keys WHERE subject_id = $1`, sid) +
				count(t, db, `SELECT count(*) FROM subjects WHERE id = $1`, sid); n != 0 {
				t.Errorf("%d rows of the subject left", n)
			}
			if n, err := svc.ResumeErasures(ctx); err != nil || n != 0 {
				t.Errorf("a second resume = %d, %v; want nothing to do", n, err)
			}
		})
	}
}

func TestTheErasurePlanDeletesReferencingRowsFirstAndSubjectsLast(t *testing.T) {
	db, _ := pgtest.Open(t)
	plan, err := compliance.ErasurePlan(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, table := range plan {
		pos[table] = i
	}
	if plan[len(plan)-1] != "subjects" {
		t.Errorf("subjects is not last: %v", plan)
	}
	for _, before := range [][2]string{{"accounts", "items"}, {"items", "credentials"}, {"provider_webhook_events", "items"}, {"verifications", "accounts"}, {"link_sessions", "items"}} {
		a, okA := pos[before[0]]
		b, okB := pos[before[1]]
		if !okA || !okB || a > b {
			t.Errorf("%s must come before %s: %v", before[0], before[1], plan)
		}
	}
	for _, never := range []string{"legal_holds", "erasure_requests", "audit_entries"} {
		if _, ok := pos[never]; ok {
			t.Errorf("%s is in the erasure plan", never)
		}
	}
}
