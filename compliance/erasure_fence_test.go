package compliance_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/audit/audittest"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
)

func TestEveryTableThatNamesASubjectIsFenced(t *testing.T) {
	db, _ := pgtest.Open(t)
	rows, err := db.Pool.Query(context.Background(), `
		SELECT c.table_name,
		       EXISTS (SELECT 1 FROM information_schema.triggers tr
		               WHERE tr.event_object_schema = 'public' AND tr.event_object_table = c.table_name
		                 AND tr.trigger_name = 'subject_write_fence' AND tr.event_manipulation = 'INSERT')
		FROM information_schema.columns c
		JOIN information_schema.tables tb ON tb.table_schema = c.table_schema AND tb.table_name = c.table_name
		WHERE c.table_schema = 'public' AND c.column_name = 'subject_id' AND tb.table_type = 'BASE TABLE'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	for rows.Next() {
		var table string
		var fenced bool
		if err := rows.Scan(&table, &fenced); err != nil {
			t.Fatal(err)
		}
		seen[table] = true
		if !fenced {
			t.Errorf("table %s names a subject but has no subject_write_fence trigger: add it in its migration", table)
		}
	}
	for _, want := range []string{"credentials", "items", "accounts", "link_sessions", "verifications", "idempotency_keys"} {
		if !seen[want] {
			t.Errorf("%s is not among the fenced tables", want)
		}
	}
}

func TestAnApprovedErasureFencesTheSubjectInTheDatabaseAndTheVault(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	svc := compliance.NewService(db, audit.NewAuditor(db, audittest.Pseudonyms{}, nil), tableShredder{}, nil)
	svc.AddRevoker(&downRevoker{}) // the run stops at the provider: the fence stands
	sid := newSubject(t, db, "user-fenced")
	other := newSubject(t, db, "user-free")
	r, err := svc.RequestErasure(ctx, compliance.Staff{ID: "staff_a"}, "user-fenced", "T-5")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := svc.ApproveErasure(ctx, compliance.Staff{ID: "staff_b"}, r.ID); err != nil || got.Status != compliance.ErasureApproved {
		t.Fatalf("approve = %+v, %v", got, err)
	}
	insert := func(subjectID, ref string) error {
		_, err := db.Pool.Exec(ctx, `INSERT INTO credentials (ref, subject_id, kind, key_version, envelope) VALUES ($1, $2, 'account_number', 1, '\x00')`, ref, subjectID)
		return postgres.Translate(err)
	}
	if err := insert(sid, "cred_fenced"); kluis.ErrorCode(err) != kluis.ESubjectErasing {
		t.Errorf("a raw insert for the erasing subject = %v, want %s", err, kluis.ESubjectErasing)
	}
	if _, err := vault.EnsureSubject(ctx, db.Pool, "user-fenced"); kluis.ErrorCode(err) != kluis.ESubjectErasing {
		t.Errorf("EnsureSubject = %v, want %s", err, kluis.ESubjectErasing)
	}
	if err := vault.FenceSubject(ctx, db.Pool, sid); kluis.ErrorCode(err) != kluis.ESubjectErasing {
		t.Errorf("FenceSubject = %v, want %s", err, kluis.ESubjectErasing)
	}
	if err := insert(other, "cred_free"); err != nil {
		t.Errorf("another subject's insert = %v", err)
	}
}

// Writers race the approval: each keeps inserting until it is refused.
// None sees another error (no deadlock, no lost update), and none succeeds
// after it was once refused: the fence, once committed, holds for all.
func TestWritesRacingTheApprovalCommitBeforeItOrAreRefusedForGood(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	svc := compliance.NewService(db, audit.NewAuditor(db, audittest.Pseudonyms{}, nil), tableShredder{}, nil)
	svc.AddRevoker(&downRevoker{})
	sid := newSubject(t, db, "user-raced")
	r, err := svc.RequestErasure(ctx, compliance.Staff{ID: "staff_a"}, "user-raced", "T-6")
	if err != nil {
		t.Fatal(err)
	}
	const writers = 16
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	start := make(chan struct{})
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			refused := 0
			for i := 0; refused < 3 && i < 10000; i++ {
				err := db.InTx(ctx, func(tx pgx.Tx) error {
					if err := vault.FenceSubject(ctx, tx, sid); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, `INSERT INTO credentials (ref, subject_id, kind, key_version, envelope) VALUES ($1, $2, 'account_number', 1, '\x00')`,
						fmt.Sprintf("cred_w%d_%d", w, i), sid)
					return err
				})
				switch {
				case kluis.ErrorCode(err) == kluis.ESubjectErasing:
					refused++
				case err != nil:
					errs <- err
					return
				case refused > 0:
					errs <- fmt.Errorf("writer %d wrote after it was refused", w)
					return
				}
			}
		}()
	}
	close(start)
	got, err := svc.ApproveErasure(ctx, compliance.Staff{ID: "staff_b"}, r.ID)
	wg.Wait()
	close(errs)
	if err != nil || got.Status != compliance.ErasureApproved {
		t.Fatalf("approve = %+v, %v", got, err)
	}
	for err := range errs {
		t.Error(err)
	}
}

// destroyingRevoker "revokes" a subject's items by deleting one credential
// per item, each in a transaction that runs the erasure's fence first, as
// bank linking does; once the fence has passed, it checks that no hold on
// the subject has committed (held is set when PlaceHold has returned).
type destroyingRevoker struct {
	db         *postgres.DB
	items      int
	held       map[string]*atomic.Bool
	reached    map[string]chan struct{} // closed when the run starts on item at[subject]
	at         map[string]int
	violations atomic.Int32
}

func (r *destroyingRevoker) RevokeSubject(ctx context.Context, subjectID string, fence compliance.RevokeFence) (compliance.Revocation, error) {
	for i := 0; i < r.items; i++ {
		if i == r.at[subjectID] {
			close(r.reached[subjectID]) // the hold races the rest of the run
		}
		// A provider call's worth of time.
		time.Sleep(time.Millisecond)
		err := r.db.InTx(ctx, func(tx pgx.Tx) error {
			if err := fence(ctx, tx, fmt.Sprintf("itm_%d", i), true); err != nil {
				return err
			}
			if r.held[subjectID].Load() {
				r.violations.Add(1) // a hold committed, and this transaction destroys all the same
			}
			_, err := tx.Exec(ctx, `DELETE FROM credentials WHERE ref = $1`, fmt.Sprintf("cred_%s_%d", subjectID, i))
			return err
		})
		if err != nil {
			return compliance.Revocation{}, err
		}
	}
	return compliance.Revocation{}, nil
}

func (r *destroyingRevoker) Live(context.Context, pgx.Tx, string) (int, error) { return 0, nil }

// Break 4 under load: holds placed while erasures run. Whatever the
// interleaving, no destructive transaction commits after a hold on its
// subject did; a hold that was placed leaves the erasure unfinished; and a
// hold that could not be placed found the subject already erased.
func TestHoldsRacingErasuresSeeNothingDestroyedAfterTheyCommit(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	const subjects, items = 12, 4
	rev := &destroyingRevoker{db: db, items: items, held: map[string]*atomic.Bool{},
		reached: map[string]chan struct{}{}, at: map[string]int{}}
	svc := compliance.NewService(db, audit.NewAuditor(db, audittest.Pseudonyms{}, nil), tableShredder{}, nil)
	svc.AddRevoker(rev)
	type run struct{ external, sid, req string }
	runs := make([]run, subjects)
	for i := range runs {
		ext := fmt.Sprintf("user-hold-race-%d", i)
		sid := newSubject(t, db, ext)
		rev.held[sid] = &atomic.Bool{}
		rev.reached[sid], rev.at[sid] = make(chan struct{}), i%items
		exec(t, db, `INSERT INTO keystore.subject_keys (id, subject_id, version, wrapped) VALUES ($1, $2, 1, '\x00')`, "sk_"+sid, sid)
		for j := 0; j < items; j++ {
			exec(t, db, `INSERT INTO credentials (ref, subject_id, kind, key_version, envelope) VALUES ($1, $2, 'account_number', 1, '\x00')`,
				fmt.Sprintf("cred_%s_%d", sid, j), sid)
		}
		r, err := svc.RequestErasure(ctx, compliance.Staff{ID: "staff_a"}, ext, "T-7")
		if err != nil {
			t.Fatal(err)
		}
		runs[i] = run{ext, sid, r.ID}
	}
	var wg sync.WaitGroup
	holdErr := make([]error, subjects)
	start := make(chan struct{})
	for i, r := range runs {
		wg.Add(2)
		approved := make(chan struct{})
		go func() {
			defer wg.Done()
			defer close(approved)
			<-start
			_, _ = svc.ApproveErasure(ctx, compliance.Staff{ID: "staff_b"}, r.req)
		}()
		go func() {
			defer wg.Done()
			<-start
			// The hold is placed while the run is at one of its items
			// (a different one for each subject).
			select {
			case <-rev.reached[r.sid]:
			case <-approved:
			}
			_, holdErr[i] = svc.PlaceHold(ctx, compliance.Staff{ID: "staff_c"}, r.external, "CASE-7")
			if holdErr[i] == nil {
				rev.held[r.sid].Store(true)
			}
		}()
	}
	close(start)
	wg.Wait()
	if n := rev.violations.Load(); n != 0 {
		t.Errorf("%d destructive transactions committed after a hold on their subject had", n)
	}
	for i, r := range runs {
		got, err := svc.GetErasure(ctx, r.req)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case holdErr[i] == nil && got.Status == compliance.ErasureCompleted:
			t.Errorf("%s: a hold was placed and the erasure completed all the same", r.external)
		case holdErr[i] != nil && (kluis.ErrorCode(holdErr[i]) != kluis.ENotFound || got.Status != compliance.ErasureCompleted):
			t.Errorf("%s: hold = %v with the erasure %s", r.external, holdErr[i], got.Status)
		}
	}
}
