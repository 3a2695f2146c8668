package audit_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/audit/audittest"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// The audit benchmarks compare Record (an entry in its own transaction, as a
// reveal writes it, with the trigger that queues it for sealing) against its
// floor: the same insert into a table of the same shape with no trigger.
// BenchmarkSeal measures the sealer: chaining entries that are waiting.
//
//	go test -run '^$' -bench . -benchtime 5000x ./audit/

func entry() audit.Entry {
	return audit.Entry{ActorKind: audit.ActorService, Actor: "payments", Action: "credential.reveal",
		Target: "cred_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", Outcome: audit.OutcomeSuccess, Subject: "user_1",
		RequestID: "req_aaaaaaaaaaaaaaaaaaaa", Details: map[string]any{"kind": "bank_access_token", "purpose": "payment_initiation"}}
}

func BenchmarkRecord(b *testing.B) {
	a, _ := audittest.NewAuditor(b)
	ctx := context.Background()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := a.Record(ctx, entry()); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkRecordFloor(b *testing.B) {
	_, db := audittest.NewAuditor(b)
	ctx := context.Background()
	// The owner makes the table; the serving role inserts, as kluis does.
	owner := ownerOf(b, db)
	for _, stmt := range []string{
		`CREATE TABLE floor_entries (LIKE audit_entries INCLUDING DEFAULTS INCLUDING INDEXES INCLUDING IDENTITY)`,
		`GRANT INSERT ON floor_entries TO ` + pgtest.ServingRole,
	} {
		if _, err := owner.Pool.Exec(ctx, stmt); err != nil {
			b.Fatal(err)
		}
	}
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			err := db.InTx(ctx, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `INSERT INTO floor_entries (occurred_at, actor_kind, actor, action, target, outcome, subject_pseudonym, request_id, details)
					VALUES (now(), 'service', 'payments', 'credential.reveal', 'cred_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'success', 'abcdef0123456789abcdef0123456789', 'req_aaaaaaaaaaaaaaaaaaaa', '{"kind": "bank_access_token", "purpose": "payment_initiation"}')`)
				return err
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkSeal(b *testing.B) {
	a, db := audittest.NewAuditor(b)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		if err := a.Record(ctx, entry()); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	n, err := audit.NewSealer(db, 0).SealPending(ctx)
	if err != nil || n != b.N {
		b.Fatalf("sealed %d of %d: %v", n, b.N, err)
	}
}
