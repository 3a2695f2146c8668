package compliance_test

import (
	"context"
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// The four eyes hold in the database too, beneath the code: whatever
// writes erasure_requests, a rejection by the requester, a cancellation by
// anyone else, and a completion with exceptions by one person alone (or by
// nobody who acknowledged) are refused.
func TestTheDatabaseRefusesAnErasureTransitionByTheWrongPerson(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	insert := func(status string) string {
		id := kluis.NewID(kluis.PrefixErasure)
		approvedBy := any(nil)
		if status == "needs_attention" {
			approvedBy = "staff_b"
		}
		if _, err := db.Pool.Exec(ctx, `
			INSERT INTO erasure_requests (id, erased_subject_id, subject_pseudonym, reason, status, requested_by, requested_at, approved_by, approved_at)
			VALUES ($1, 'sub_x' || $1, 'p', 'T-1', $2, 'staff_a', now(), $3, CASE WHEN $3::text IS NULL THEN NULL ELSE now() END)`,
			id, status, approvedBy); err != nil {
			t.Fatal(err)
		}
		return id
	}
	cases := []struct {
		name, status, update string
		ok                   bool
	}{
		{"another staff member rejects", "pending_approval",
			`status = 'rejected', closed_by = 'staff_b', closed_at = now(), close_reason = 'T', erased_subject_id = NULL`, true},
		{"the requester rejects", "pending_approval",
			`status = 'rejected', closed_by = 'staff_a', closed_at = now(), close_reason = 'T', erased_subject_id = NULL`, false},
		{"the requester cancels", "pending_approval",
			`status = 'cancelled', closed_by = 'staff_a', closed_at = now(), close_reason = 'T', erased_subject_id = NULL`, true},
		{"another staff member cancels", "pending_approval",
			`status = 'cancelled', closed_by = 'staff_b', closed_at = now(), close_reason = 'T', erased_subject_id = NULL`, false},
		{"a rejection without a reason", "pending_approval",
			`status = 'rejected', closed_by = 'staff_b', closed_at = now(), erased_subject_id = NULL`, false},
		{"two staff complete with exceptions", "needs_attention",
			`status = 'completed_with_exceptions', exceptions_acknowledged_by = 'staff_c', exceptions_acknowledged_at = now(),
			 exceptions_completed_by = 'staff_d', receipt = '{}', erased_subject_id = NULL`, true},
		{"one staff member completes with exceptions alone", "needs_attention",
			`status = 'completed_with_exceptions', exceptions_acknowledged_by = 'staff_c', exceptions_acknowledged_at = now(),
			 exceptions_completed_by = 'staff_c', receipt = '{}', erased_subject_id = NULL`, false},
		{"a completion with exceptions nobody acknowledged", "needs_attention",
			`status = 'completed_with_exceptions', exceptions_completed_by = 'staff_c', receipt = '{}', erased_subject_id = NULL`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := insert(c.status)
			_, err := db.Pool.Exec(ctx, `UPDATE erasure_requests SET `+c.update+` WHERE id = $1`, id)
			if (err == nil) != c.ok {
				t.Fatalf("update: %v, want allowed = %v", err, c.ok)
			}
		})
	}
}
