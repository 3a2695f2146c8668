package compliance_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
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
	svc := compliance.NewService(db, compliance.NewAuditor(db, testPseudonyms{}, nil), tableShredder{}, nil)
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
	svc := compliance.NewService(db, compliance.NewAuditor(db, testPseudonyms{}, nil), tableShredder{}, nil)
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
