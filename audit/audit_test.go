package audit_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/audit/audittest"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

func newAuditor(t *testing.T) (*audit.Auditor, *postgres.DB) {
	t.Helper()
	return audittest.NewAuditor(t)
}

func record(t *testing.T, a *audit.Auditor, i int) {
	t.Helper()
	err := a.Record(context.Background(), audit.Entry{
		ActorKind: audit.ActorUser, Actor: fmt.Sprintf("user-%d", i), Action: "test.action",
		Target: fmt.Sprintf("itm_%d", i), Outcome: audit.OutcomeSuccess, Subject: fmt.Sprintf("user-%d", i),
		RequestID: "req", Details: map[string]any{"n": i},
	})
	if err != nil {
		t.Fatalf("record: %v", err)
	}
}

func TestConcurrentEntriesAreAllSealedIntoOneValidChain(t *testing.T) {
	a, db := newAuditor(t)
	ctx := context.Background()
	sealer := audit.NewSealer(db, 7) // a small batch, so several batches run
	var wg sync.WaitGroup
	for g := 0; g < 20; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				record(t, a, g*100+i)
				if i%3 == 0 { // sealers race with writers and with each other
					if _, err := sealer.SealPending(ctx); err != nil {
						t.Errorf("seal: %v", err)
					}
				}
			}
		}(g)
	}
	wg.Wait()
	if _, err := sealer.SealPending(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := audit.Verify(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.Entries != 200 || res.Unsealed != 0 {
		t.Fatalf("verify = %+v, want ok with 200 entries and none unsealed", res)
	}
}

func TestVerifyReportsUnsealedEntries(t *testing.T) {
	a, db := newAuditor(t)
	record(t, a, 1)
	res, err := audit.Verify(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.Unsealed != 1 || res.Entries != 0 {
		t.Fatalf("verify = %+v, want ok, 1 unsealed", res)
	}
}

// TestUpdateDeleteAndTruncateAreRefused: the serving role holds no such
// privilege; the owner, who does, still meets the append-only triggers
// (unless it switches them off, which TestVerifyNamesTheFirstEntry… does).
func TestUpdateDeleteAndTruncateAreRefused(t *testing.T) {
	a, db := newAuditor(t)
	record(t, a, 1)
	if _, err := audit.NewSealer(db, 0).SealPending(context.Background()); err != nil {
		t.Fatal(err)
	}
	owner := ownerOf(t, db)
	for _, stmt := range []string{
		`UPDATE audit_entries SET action = 'x'`,
		`DELETE FROM audit_entries`,
		`TRUNCATE audit_entries CASCADE`,
		`UPDATE audit_chain SET hash = '\x00'`,
		`DELETE FROM audit_chain`,
	} {
		_, err := db.Pool.Exec(context.Background(), stmt)
		if err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s as the serving role: err = %v, want permission denied", stmt, err)
		}
		_, err = owner.Pool.Exec(context.Background(), stmt)
		if err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s as the owner: err = %v, want the append-only refusal", stmt, err)
		}
	}
}

// ownerOf opens db's database as its owner, for tests that play an
// attacker with the owner's rights.
func ownerOf(t testing.TB, db *postgres.DB) *postgres.DB {
	t.Helper()
	return pgtest.OpenOwner(t, db.Pool.Config().ConnString())
}

func TestVerifyNamesTheFirstEntryChangedBehindTheTriggersBack(t *testing.T) {
	cases := []struct {
		name   string
		tamper string
	}{
		{"an edited action", `UPDATE audit_entries SET action = 'forged' WHERE seq = $1`},
		{"edited details", `UPDATE audit_entries SET details = '{"n": 999}' WHERE seq = $1`},
		{"a subject pseudonym removed", `UPDATE audit_entries SET subject_pseudonym = NULL WHERE seq = $1`},
		{"an edited link hash", `UPDATE audit_chain SET hash = sha256(hash) WHERE entry_seq = $1`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, db := newAuditor(t)
			ctx := context.Background()
			for i := 0; i < 10; i++ {
				record(t, a, i)
			}
			if _, err := audit.NewSealer(db, 0).SealPending(ctx); err != nil {
				t.Fatal(err)
			}
			var victim int64
			if err := db.Pool.QueryRow(ctx, `SELECT entry_seq FROM audit_chain WHERE pos = 4`).Scan(&victim); err != nil {
				t.Fatal(err)
			}
			tamper(t, ownerOf(t, db), tc.tamper, victim)
			res, err := audit.Verify(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			if res.OK || res.FirstBadSeq == nil || *res.FirstBadSeq != victim {
				t.Fatalf("verify = %+v, want the entry with seq %d named", res, victim)
			}
		})
	}
}

// tamper runs stmt with the append-only triggers disabled, as an attacker with
// the table owner's rights could; db must be the owner's.
func tamper(t *testing.T, db *postgres.DB, stmt string, seq int64) {
	t.Helper()
	ctx := context.Background()
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		for _, s := range []string{
			`ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only`,
			`ALTER TABLE audit_chain DISABLE TRIGGER audit_chain_append_only`,
		} {
			if _, err := tx.Exec(ctx, s); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, stmt, seq)
		return err
	})
	if err != nil {
		t.Fatalf("tamper: %v", err)
	}
}

func TestPeopleAreStoredOnlyAsPseudonyms(t *testing.T) {
	a, db := newAuditor(t)
	record(t, a, 42)
	var n int
	err := db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM audit_entries e WHERE e::text LIKE '%user-42%'`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("the subject's id appears in %d audit rows in the clear", n)
	}
}
