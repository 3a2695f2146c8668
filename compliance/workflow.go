package compliance

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres"
)

// closed reports whether a request in status was refused or withdrawn: it
// will never run.
func closed(status string) bool { return status == ErasureRejected || status == ErasureCancelled }

func errClosed(status string) error {
	return kluis.Errorf(kluis.EConflict, "the erasure request is %s", status)
}

// refuseIfClosed is the answer of a transition whose conditional update
// found the request moved on: EConflict when it was rejected or cancelled
// meanwhile, nil otherwise.
func refuseIfClosed(ctx context.Context, tx pgx.Tx, id string) error {
	var status string
	if err := tx.QueryRow(ctx, `SELECT status FROM erasure_requests WHERE id = $1`, id).Scan(&status); err != nil {
		return fmt.Errorf("compliance: erasure status: %w", postgres.Translate(err))
	}
	if closed(status) {
		return errClosed(status)
	}
	return nil
}

// deleteSubjectRows deletes the subject's rows in every table the catalog
// shows, in foreign-key order (subjects last), in the caller's transaction,
// and returns the counts by table. It names no table: it is the catalog
// walk that reaches every feature's tables by design (catalog.go), the
// vault's subjects row included.
func deleteSubjectRows(ctx context.Context, tx pgx.Tx, subjectID string) (map[string]int64, error) {
	cat, err := loadCatalog(ctx, tx)
	if err != nil {
		return nil, err
	}
	plan, err := cat.subjectPlan()
	if err != nil {
		return nil, err
	}
	erased := map[string]int64{}
	for _, step := range plan {
		tag, err := tx.Exec(ctx, fmt.Sprintf(`DELETE FROM %s WHERE %s`, quoteIdent(step.Table), step.Where), subjectID)
		if err != nil {
			return nil, fmt.Errorf("compliance: erasure: delete from %s: %w", step.Table, postgres.Translate(err))
		}
		if n := tag.RowsAffected(); n > 0 {
			erased[step.Table] = n
		}
	}
	return erased, nil
}

// RejectErasure refuses the pending request id, with a reason. The
// requester cannot reject their own request (EForbidden, audited; they
// cancel it); a request no longer pending_approval is EConflict.
func (s *Service) RejectErasure(ctx context.Context, by Staff, id, reason string) (ErasureRequest, error) {
	return s.closeErasure(ctx, by, id, reason, ErasureRejected)
}

// CancelErasure withdraws the pending request id, with a reason. Only its
// requester may (EForbidden, audited: another staff member rejects it); a
// request no longer pending_approval is EConflict.
func (s *Service) CancelErasure(ctx context.Context, by Staff, id, reason string) (ErasureRequest, error) {
	return s.closeErasure(ctx, by, id, reason, ErasureCancelled)
}

// closeErasure moves a pending request to rejected or cancelled: one
// conditional update from pending_approval, with its audit entry in the
// same transaction, so that it and an approval cannot both win. The closed
// request lets go of the subject's internal id.
func (s *Service) closeErasure(ctx context.Context, by Staff, id, reason, to string) (ErasureRequest, error) {
	reason, err := checkReason(reason)
	if err != nil {
		return ErasureRequest{}, err
	}
	r, err := s.GetErasure(ctx, id)
	if err != nil {
		return r, err
	}
	action := map[string]string{ErasureRejected: "erasure.reject", ErasureCancelled: "erasure.cancel"}[to]
	entry := audit.Entry{ActorKind: audit.ActorStaff, Actor: by.ID, Action: action, Target: r.ID, RequestID: by.RequestID}
	if self := by.ID == r.RequestedBy; self != (to == ErasureCancelled) {
		why, msg := "requester_cannot_reject", "an erasure request is rejected by another staff member; its requester cancels it"
		if to == ErasureCancelled {
			why, msg = "only_requester_cancels", "only the requester can cancel an erasure request; another staff member rejects it"
		}
		entry.Outcome, entry.Details = audit.OutcomeDenied, map[string]any{"reason": why}
		if err := s.recordPseudonymous(ctx, entry, r.SubjectPseudonym); err != nil {
			return r, err
		}
		return r, kluis.Errorf(kluis.EForbidden, "%s", msg)
	}
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
			UPDATE erasure_requests SET status = $2, closed_by = $3, closed_at = $4, close_reason = $5, erased_subject_id = NULL
			WHERE id = $1 AND status = $6`, r.ID, to, by.ID, s.clock.Now().UTC(), reason, ErasurePending)
		if err != nil {
			return fmt.Errorf("compliance: %s erasure: %w", to, postgres.Translate(err))
		}
		if tag.RowsAffected() == 0 {
			return kluis.Errorf(kluis.EConflict, "only a request pending approval can be %s", to)
		}
		entry.Outcome = audit.OutcomeSuccess
		return s.auditor.AppendPseudonymous(ctx, tx, entry, r.SubjectPseudonym)
	})
	if err != nil {
		return r, err
	}
	return s.GetErasure(ctx, id)
}

// Keyset is a position in a list ordered newest first: the time and id of
// the last row of a page. The next page starts after it.
type Keyset struct {
	At time.Time `json:"t"`
	ID string    `json:"i"`
}

// ErasureFilter narrows a list of erasure requests; zero fields do not.
type ErasureFilter struct {
	// Statuses keeps requests in any of these statuses.
	Statuses []string
	// RequestedBy keeps the requests of one staff member.
	RequestedBy string
	// RequestedBefore keeps requests made before this time (older ones).
	RequestedBefore *time.Time
}

// ErasureStatuses lists every erasure request status, for validation.
var ErasureStatuses = []string{ErasurePending, ErasureRejected, ErasureCancelled, ErasureApproved,
	ErasureNeedsAttention, ErasureCompleted, ErasureCompletedWithExceptions}

// ListErasures returns up to limit requests that pass f, newest request
// first, after the position after (nil: from the newest); next is the
// position to ask from for the following page, nil when there is none.
func (s *Service) ListErasures(ctx context.Context, f ErasureFilter, limit int, after *Keyset) ([]ErasureRequest, *Keyset, error) {
	var at *time.Time
	var afterID string
	if after != nil {
		at, afterID = &after.At, after.ID
	}
	var statuses []string
	if len(f.Statuses) > 0 {
		statuses = f.Statuses
	}
	rows, err := s.db.Pool.Query(ctx, `SELECT `+erasureColumns+` FROM erasure_requests
		WHERE ($1::text[] IS NULL OR status = ANY ($1))
		  AND ($2 = '' OR requested_by = $2)
		  AND ($3::timestamptz IS NULL OR requested_at < $3)
		  AND ($4::timestamptz IS NULL OR (requested_at, id) < ($4, $5))
		ORDER BY requested_at DESC, id DESC LIMIT $6`,
		statuses, f.RequestedBy, f.RequestedBefore, at, afterID, limit+1)
	if err != nil {
		return nil, nil, fmt.Errorf("compliance: list erasures: %w", postgres.Translate(err))
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ErasureRequest, error) { return scanErasure(r) })
	if err != nil {
		return nil, nil, fmt.Errorf("compliance: list erasures: %w", postgres.Translate(err))
	}
	if len(list) <= limit {
		return list, nil, nil
	}
	list = list[:limit]
	last := list[limit-1]
	return list, &Keyset{At: last.RequestedAt, ID: last.ID}, nil
}

// Which legal holds ListHolds returns.
const (
	HoldsActive = "active"
	HoldsLifted = "lifted"
	HoldsAll    = "all"
)

// ListHolds returns up to limit legal holds (active, lifted or all), newest
// first, after the position after; next is the following page's position,
// nil when there is none.
func (s *Service) ListHolds(ctx context.Context, which string, limit int, after *Keyset) ([]LegalHold, *Keyset, error) {
	var at *time.Time
	var afterID string
	if after != nil {
		at, afterID = &after.At, after.ID
	}
	rows, err := s.db.Pool.Query(ctx, `
		SELECT id, subject_pseudonym, reason, created_by, created_at, coalesce(lifted_by, ''), lifted_at
		FROM legal_holds
		WHERE ($1 = 'all' OR ($1 = 'active') = (lifted_at IS NULL))
		  AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
		ORDER BY created_at DESC, id DESC LIMIT $4`, which, at, afterID, limit+1)
	if err != nil {
		return nil, nil, fmt.Errorf("compliance: list holds: %w", postgres.Translate(err))
	}
	holds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (LegalHold, error) {
		var h LegalHold
		err := r.Scan(&h.ID, &h.SubjectPseudonym, &h.Reason, &h.CreatedBy, &h.CreatedAt, &h.LiftedBy, &h.LiftedAt)
		return h, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("compliance: list holds: %w", postgres.Translate(err))
	}
	if len(holds) <= limit {
		return holds, nil, nil
	}
	holds = holds[:limit]
	last := holds[limit-1]
	return holds, &Keyset{At: last.CreatedAt, ID: last.ID}, nil
}
