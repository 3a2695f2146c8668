package compliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
)

// Erasure request statuses.
const (
	ErasurePending   = "pending_approval"
	ErasureApproved  = "approved"
	ErasureCompleted = "completed"
	// ErasureNeedsAttention is a run whose provider kept refusing to revoke
	// items (DefaultRevokeAttempts passes): the subject stays fenced, keys
	// and rows intact, and the request names the items (unrevoked_items)
	// until people act. Approving it again tries once more.
	ErasureNeedsAttention = "needs_attention"
	// ErasureCompletedWithExceptions is a needs_attention run that two staff
	// completed; its receipt names each item the provider did not revoke.
	ErasureCompletedWithExceptions = "completed_with_exceptions"
	// ErasureRejected is a pending request another staff member refused;
	// ErasureCancelled one its requester withdrew (workflow.go).
	ErasureRejected  = "rejected"
	ErasureCancelled = "cancelled"
)

// running reports whether a request in status is one the run carries on.
func running(status string) bool {
	return status == ErasureApproved || status == ErasureNeedsAttention
}

// Erasure steps, in the order they run. Each is recorded in the request's
// steps when it is done, so a run cut short resumes after the last one.
const (
	StepRevoke = "revoke"
	StepShred  = "shred"
	StepDelete = "delete"
)

// ErasureRequest is a request to erase a subject, as compliance staff see it.
// It names the subject by audit pseudonym only.
type ErasureRequest struct {
	ID               string     `json:"id"`
	Status           string     `json:"status"`
	SubjectPseudonym string     `json:"subject_pseudonym"`
	Reason           string     `json:"reason"`
	RequestedBy      string     `json:"requested_by"`
	RequestedAt      time.Time  `json:"requested_at"`
	ApprovedBy       string     `json:"approved_by,omitempty"`
	ApprovedAt       *time.Time `json:"approved_at,omitempty"`
	CompletedAt      *time.Time `json:"completed_at,omitempty"`
	// LastError says, safely, why the last run stopped short.
	LastError string `json:"last_error,omitempty"`
	// UnrevokedItems names the items the provider did not revoke on the last
	// pass (needs_attention says it kept refusing).
	UnrevokedItems []UnrevokedItem `json:"unrevoked_items,omitempty"`
	Receipt        *Receipt        `json:"receipt,omitempty"`
	// ClosedBy, ClosedAt and CloseReason say who rejected or cancelled the
	// request, when and why.
	ClosedBy    string     `json:"closed_by,omitempty"`
	ClosedAt    *time.Time `json:"closed_at,omitempty"`
	CloseReason string     `json:"close_reason,omitempty"`
	// ExceptionsAcknowledgedBy is the first of the two staff members who
	// complete a needs_attention request with exceptions.
	ExceptionsAcknowledgedBy string     `json:"exceptions_acknowledged_by,omitempty"`
	ExceptionsAcknowledgedAt *time.Time `json:"exceptions_acknowledged_at,omitempty"`

	subjectID string
	steps     erasureSteps
}

// Receipt is the lasting record of a completed erasure: what was erased,
// when, and under which request. It holds no secret and no personal data:
// the subject appears only as the audit pseudonym, staff by their ids, and
// the data as counts per table.
type Receipt struct {
	RequestID        string    `json:"request_id"`
	SubjectPseudonym string    `json:"subject_pseudonym"`
	RequestedBy      string    `json:"requested_by"`
	ApprovedBy       string    `json:"approved_by"`
	RequestedAt      time.Time `json:"requested_at"`
	ApprovedAt       time.Time `json:"approved_at"`
	KeysDestroyedAt  time.Time `json:"keys_destroyed_at"`
	CompletedAt      time.Time `json:"completed_at"`
	// ProviderItemsRevoked counts items whose access was revoked at their
	// provider; SubjectKeysDestroyed the subject key versions shredded.
	ProviderItemsRevoked int `json:"provider_items_revoked"`
	SubjectKeysDestroyed int `json:"subject_keys_destroyed"`
	// Erased counts the rows deleted, by category (table).
	Erased map[string]int64 `json:"erased"`
	// UnrevokedItems names, on a completed_with_exceptions receipt, each
	// item the provider did not revoke (kluis's own copies are destroyed),
	// and ExceptionsApprovedBy the two staff members who accepted that.
	UnrevokedItems       []UnrevokedItem `json:"unrevoked_items,omitempty"`
	ExceptionsApprovedBy []string        `json:"exceptions_approved_by,omitempty"`
}

// erasureSteps is the progress record (the steps column).
type erasureSteps struct {
	// Revoked is set once a revoke pass left nothing unrevoked; RevokedItems
	// lists each item a provider revoked for this run, appended in the
	// transaction that removed it (so a crash cannot lose or repeat one).
	Revoked      *int            `json:"revoked,omitempty"`
	RevokedItems []string        `json:"revoked_items,omitempty"`
	Attempts     int             `json:"revoke_attempts,omitempty"`
	Unrevoked    []UnrevokedItem `json:"unrevoked,omitempty"`

	KeysDestroyed   *int       `json:"keys_destroyed,omitempty"`
	KeysDestroyedAt *time.Time `json:"keys_destroyed_at,omitempty"`
}

const erasureColumns = `id, status, subject_pseudonym, reason, requested_by, requested_at, approved_by, approved_at,
	completed_at, last_error, receipt, erased_subject_id, steps,
	coalesce(closed_by, ''), closed_at, coalesce(close_reason, ''), coalesce(exceptions_acknowledged_by, ''), exceptions_acknowledged_at`

func scanErasure(row pgx.Row) (ErasureRequest, error) {
	var (
		r          ErasureRequest
		approvedBy *string
		subjectID  *string
		receipt    []byte
		steps      []byte
	)
	err := row.Scan(&r.ID, &r.Status, &r.SubjectPseudonym, &r.Reason, &r.RequestedBy, &r.RequestedAt, &approvedBy,
		&r.ApprovedAt, &r.CompletedAt, &r.LastError, &receipt, &subjectID, &steps,
		&r.ClosedBy, &r.ClosedAt, &r.CloseReason, &r.ExceptionsAcknowledgedBy, &r.ExceptionsAcknowledgedAt)
	if err != nil {
		return r, err
	}
	if approvedBy != nil {
		r.ApprovedBy = *approvedBy
	}
	if subjectID != nil {
		r.subjectID = *subjectID
	}
	if receipt != nil {
		r.Receipt = &Receipt{}
		if err := json.Unmarshal(receipt, r.Receipt); err != nil {
			return r, fmt.Errorf("compliance: receipt: %w", err)
		}
	}
	if err := json.Unmarshal(steps, &r.steps); err != nil {
		return r, fmt.Errorf("compliance: erasure steps: %w", err)
	}
	r.UnrevokedItems = r.steps.Unrevoked
	return r, nil
}

// RequestErasure records a request to erase the subject whose external id is
// subject, waiting for another staff member's approval. A subject kluis
// holds nothing on is ENotFound; a subject with an open request already is
// EConflict.
func (s *Service) RequestErasure(ctx context.Context, by Staff, subject, reason string) (ErasureRequest, error) {
	reason, err := checkReason(reason)
	if err != nil {
		return ErasureRequest{}, err
	}
	r := ErasureRequest{
		ID: kluis.NewID(kluis.PrefixErasure), Status: ErasurePending, SubjectPseudonym: s.auditor.Pseudonym(subject),
		Reason: reason, RequestedBy: by.ID, RequestedAt: s.clock.Now().UTC().Truncate(time.Microsecond),
	}
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		sid, err := lookupSubject(ctx, tx, subject)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO erasure_requests (id, erased_subject_id, subject_pseudonym, reason, status, requested_by, requested_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, r.ID, sid, r.SubjectPseudonym, r.Reason, r.Status, r.RequestedBy, r.RequestedAt)
		if kluis.ErrorCode(postgres.Translate(err)) == kluis.EConflict {
			return kluis.Errorf(kluis.EConflict, "an erasure request for this subject is already open")
		}
		if err != nil {
			return fmt.Errorf("compliance: request erasure: %w", postgres.Translate(err))
		}
		return s.auditor.Append(ctx, tx, audit.Entry{
			ActorKind: audit.ActorStaff, Actor: by.ID, Action: "erasure.requested", Target: r.ID,
			Outcome: audit.OutcomeSuccess, Subject: subject, RequestID: by.RequestID,
		})
	})
	return r, err
}

// GetErasure returns the request id, with its receipt once completed.
func (s *Service) GetErasure(ctx context.Context, id string) (ErasureRequest, error) {
	if !kluis.ValidID(kluis.PrefixErasure, id) {
		return ErasureRequest{}, kluis.Errorf(kluis.ENotFound, "not found")
	}
	r, err := scanErasure(s.db.Pool.QueryRow(ctx, `SELECT `+erasureColumns+` FROM erasure_requests WHERE id = $1`, id))
	if err != nil {
		return r, fmt.Errorf("compliance: get erasure: %w", postgres.Translate(err))
	}
	return r, nil
}

// ApproveErasure approves the request id and carries it out. The requester
// cannot approve (EForbidden); a legal hold on the subject refuses approval
// (ELegalHold) and leaves the request waiting. Both refusals are audited.
// A hold placed after approval stops the run too (ELegalHold, before
// anything is destroyed): the request stays approved and completes once the
// hold is lifted.
// Approving an approved request runs it again (it resumes), and so does
// approving one in needs_attention (one more pass); a completed one is
// returned as it is. When the approval commits but the run stops short (a
// provider down, say), the request is returned approved (or
// needs_attention) with no error: a later run, or the erasure-resume job,
// completes it.
//
// The approval fences the subject (vault.FenceSubject): from its commit
// until the run deletes the subject, every write for them is
// kluis.ESubjectErasing.
func (s *Service) ApproveErasure(ctx context.Context, by Staff, id string) (ErasureRequest, error) {
	r, err := s.GetErasure(ctx, id)
	if err != nil {
		return r, err
	}
	if closed(r.Status) {
		return r, errClosed(r.Status)
	}
	if !running(r.Status) && r.Status != ErasurePending {
		return r, nil
	}
	if r.Status == ErasurePending {
		if err := s.approve(ctx, by, r); err != nil {
			return r, err
		}
	}
	if err := s.execute(ctx, id); err != nil && kluis.ErrorCode(err) != kluis.EUnavailable {
		return r, err
	}
	return s.GetErasure(ctx, id)
}

func (s *Service) approve(ctx context.Context, by Staff, r ErasureRequest) error {
	entry := audit.Entry{ActorKind: audit.ActorStaff, Actor: by.ID, Action: "erasure.approve", Target: r.ID, RequestID: by.RequestID}
	if by.ID == r.RequestedBy {
		entry.Outcome, entry.Details = audit.OutcomeDenied, map[string]any{"reason": "requester_cannot_approve"}
		if err := s.recordPseudonymous(ctx, entry, r.SubjectPseudonym); err != nil {
			return err
		}
		return kluis.Errorf(kluis.EForbidden, "an erasure request must be approved by another staff member")
	}
	refused := false
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		refused = false
		// Under the subject's lock: a hold placed meanwhile is seen here or
		// waits for this commit (and then stops the run), and a write that
		// checked the fence either committed before (the run sees it) or
		// waits and is refused.
		err := GuardDestruction(ctx, tx, r.subjectID)
		if kluis.ErrorCode(err) == ELegalHold {
			refused = true
			return nil
		}
		if err != nil {
			return err
		}
		now := s.clock.Now().UTC()
		tag, err := tx.Exec(ctx, `
			UPDATE erasure_requests SET status = $2, approved_by = $3, approved_at = $4
			WHERE id = $1 AND status = $5`, r.ID, ErasureApproved, by.ID, now, ErasurePending)
		if err != nil {
			return fmt.Errorf("compliance: approve erasure: %w", postgres.Translate(err))
		}
		if tag.RowsAffected() == 0 {
			// Approved meanwhile by someone else: run it all the same;
			// rejected or cancelled meanwhile: 409.
			return refuseIfClosed(ctx, tx, r.ID)
		}
		// A fence set already (a second approval racing this one) stays.
		if _, err := vault.MarkErasing(ctx, tx, r.subjectID, now, r.ID); err != nil {
			return err
		}
		entry.Outcome = audit.OutcomeSuccess
		return s.auditor.AppendPseudonymous(ctx, tx, entry, r.SubjectPseudonym)
	})
	if err != nil {
		return err
	}
	if refused {
		entry.Outcome, entry.Details = audit.OutcomeDenied, map[string]any{"reason": "legal_hold"}
		if err := s.recordPseudonymous(ctx, entry, r.SubjectPseudonym); err != nil {
			return err
		}
		return kluis.Errorf(ELegalHold, "the subject is under a legal hold; the request stays open until it is lifted")
	}
	return nil
}

func (s *Service) recordPseudonymous(ctx context.Context, e audit.Entry, pseudonym string) error {
	err := s.db.InTx(ctx, func(tx pgx.Tx) error { return s.auditor.AppendPseudonymous(ctx, tx, e, pseudonym) })
	if err != nil {
		return kluis.Unavailable("audit log", err)
	}
	return nil
}

// ResumeErasures completes every approved request, oldest approval first,
// and returns how many it completed. The erasure-resume job runs it, so that
// a run cut short (a crash, a provider down) finishes without anyone asking.
func (s *Service) ResumeErasures(ctx context.Context) (completed int, err error) {
	rows, err := s.db.Pool.Query(ctx, `SELECT id FROM erasure_requests WHERE status = $1 ORDER BY approved_at`, ErasureApproved)
	if err != nil {
		return 0, fmt.Errorf("compliance: approved erasures: %w", postgres.Translate(err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("compliance: approved erasures: %w", postgres.Translate(err))
	}
	var errs []error
	for _, id := range ids {
		err := s.execute(ctx, id)
		if kluis.ErrorCode(err) == ELegalHold {
			continue // waits, approved, until the hold is lifted
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		completed++
	}
	return completed, errors.Join(errs...)
}

// execute carries out the approved (or needs_attention) request id from its
// last recorded step: revoke at the providers, destroy the keys, delete the
// rows and write the receipt. Each step is safe to repeat; one run of a
// request at a time (claimRun), so that two never revoke one item at once.
func (s *Service) execute(ctx context.Context, id string) error {
	r, err := s.GetErasure(ctx, id)
	if err != nil || !running(r.Status) {
		return err
	}
	release, err := s.claimRun(ctx, id)
	if err != nil {
		if r, gerr := s.GetErasure(ctx, id); gerr == nil && !running(r.Status) {
			return nil // another run finished it meanwhile
		}
		return err
	}
	defer release()
	if r, err = s.GetErasure(ctx, id); err != nil || !running(r.Status) {
		return err
	}
	err = s.runSteps(ctx, &r)
	if err != nil {
		msg := kluis.ErrorMessage(err)
		_, _ = s.db.Pool.Exec(context.WithoutCancel(ctx), `UPDATE erasure_requests SET last_error = $2 WHERE id = $1 AND status IN ($3, $4)`,
			id, msg, ErasureApproved, ErasureNeedsAttention)
	}
	return err
}

// runLease bounds how long one run holds its request (claimRun) before
// another may take over, should it have died: the erasure-resume job's own
// timeout.
const runLease = time.Hour

// claimRun takes the request for one run, a lease in its row (run_until):
// another run of it (the approve call and the erasure-resume job at once,
// on two instances) is EUnavailable and leaves the work to this one. The
// lease holds no connection, so any number of erasures can run at once
// whatever the pool's size; a run that died frees it when it lapses.
func (s *Service) claimRun(ctx context.Context, id string) (func(), error) {
	now := s.clock.Now().UTC()
	until := now.Add(runLease).Truncate(time.Microsecond)
	tag, err := s.db.Pool.Exec(ctx, `
		UPDATE erasure_requests SET run_until = $2
		WHERE id = $1 AND status IN ($3, $4) AND (run_until IS NULL OR run_until < $5)`,
		id, until, ErasureApproved, ErasureNeedsAttention, now)
	if err != nil {
		return nil, fmt.Errorf("compliance: erasure lease: %w", postgres.Translate(err))
	}
	if tag.RowsAffected() == 0 {
		return nil, kluis.Errorf(kluis.EUnavailable, "another run of this erasure is in progress")
	}
	return func() {
		_, _ = s.db.Pool.Exec(context.WithoutCancel(ctx), `UPDATE erasure_requests SET run_until = NULL WHERE id = $1 AND run_until = $2`, id, until)
	}, nil
}

// runSteps checks the legal holds again before anything is destroyed: an
// approved erasure can wait days (a provider down) and a hold placed
// meanwhile must stop it, not only a hold present at approval. Every
// destructive transaction (each item's removal, the shred, the delete)
// checks once more under the subject's row lock (GuardDestruction), which a
// hold being placed conflicts with, so the two cannot pass each other.
func (s *Service) runSteps(ctx context.Context, r *ErasureRequest) error {
	if r.steps.KeysDestroyed == nil {
		if err := RefuseIfHeld(ctx, s.db.Pool, r.subjectID); err != nil {
			return err
		}
		if err := s.revokeThenShred(ctx, r); err != nil {
			return err
		}
	}
	if err := s.deleteRows(ctx, r); err != nil {
		return err
	}
	return s.hook(StepDelete)
}

// maxRevokePasses bounds how often one run goes back to revoking when the
// shred finds something still live (an exchange in flight, say) before it
// leaves the rest to a later run.
const maxRevokePasses = 3

// errStillLive stops a shred while the subject has an item live at a
// provider or an exchange in flight: its token could not be revoked once
// the keys are gone.
var errStillLive = kluis.Errorf(kluis.EUnavailable,
	"the subject still has access live at a provider or an exchange in flight; the erasure resumes once it is revoked")

// revokeThenShred revokes at the providers, then destroys the keys once
// nothing of the subject is live at a provider; what the shred finds still
// live sends it back to revoking.
func (s *Service) revokeThenShred(ctx context.Context, r *ErasureRequest) error {
	for pass := 1; ; pass++ {
		if r.steps.Revoked == nil || pass > 1 {
			if err := s.revoke(ctx, r); err != nil {
				return err
			}
			if err := s.hook(StepRevoke); err != nil {
				return err
			}
		}
		// Crypto-shredding comes first among the data steps: from its
		// commit on, no copy of the subject's sealed records opens,
		// wherever it survives.
		err := s.shred(ctx, r)
		if err == errStillLive && pass < maxRevokePasses {
			continue
		}
		if err != nil {
			return err
		}
		return s.hook(StepShred)
	}
}

// revoke runs one pass of every revoker. Each item a provider revoked is
// recorded by the fence in the transaction that removes it; items a provider
// did not revoke make this pass an attempt, and after revokeAttempts of
// them the request is needs_attention, naming the items.
func (s *Service) revoke(ctx context.Context, r *ErasureRequest) error {
	var unrevoked []UnrevokedItem
	for _, rv := range s.revokers {
		rev, err := rv.RevokeSubject(ctx, r.subjectID, s.revokeFence(r))
		if err != nil {
			return fmt.Errorf("compliance: erasure: revoke at provider: %w", err)
		}
		unrevoked = append(unrevoked, rev.Unrevoked...)
	}
	fresh, err := s.GetErasure(ctx, r.ID) // the fences appended to steps
	if err != nil {
		return err
	}
	r.steps.RevokedItems = fresh.steps.RevokedItems
	r.steps.Unrevoked = unrevoked
	if len(unrevoked) == 0 {
		n := len(r.steps.RevokedItems)
		r.steps.Revoked = &n
		return s.saveSteps(ctx, r)
	}
	r.steps.Attempts++
	if err := s.revokeRefused(ctx, r); err != nil {
		return err
	}
	return kluis.Errorf(kluis.EUnavailable, "the provider did not revoke %d item(s) of the subject (attempt %d of %d)",
		len(unrevoked), r.steps.Attempts, s.revokeAttempts)
}

// revokeRefused records an attempt that left items unrevoked and, once
// there have been revokeAttempts of them, moves the request to
// needs_attention with its audit entry, which names the items.
func (s *Service) revokeRefused(ctx context.Context, r *ErasureRequest) error {
	raw, err := json.Marshal(r.steps)
	if err != nil {
		return fmt.Errorf("compliance: erasure steps: %w", err)
	}
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		status := ErasureApproved
		if r.steps.Attempts >= s.revokeAttempts {
			status = ErasureNeedsAttention
		}
		tag, err := tx.Exec(ctx, `UPDATE erasure_requests SET steps = $2, status = $3 WHERE id = $1 AND status IN ($4, $5)`,
			r.ID, raw, status, ErasureApproved, ErasureNeedsAttention)
		if err != nil {
			return fmt.Errorf("compliance: erasure steps: %w", postgres.Translate(err))
		}
		if tag.RowsAffected() == 0 || status != ErasureNeedsAttention || r.Status == ErasureNeedsAttention {
			return nil
		}
		r.Status = status
		items := make([]string, len(r.steps.Unrevoked))
		for i, u := range r.steps.Unrevoked {
			items[i] = u.ItemID
		}
		return s.auditor.AppendPseudonymous(ctx, tx, audit.Entry{
			ActorKind: audit.ActorSystem, Actor: "erasure", Action: "erasure.needs_attention", Target: r.ID,
			Outcome: audit.OutcomeFailure, Details: map[string]any{"unrevoked_items": items, "attempts": r.steps.Attempts},
		}, r.SubjectPseudonym)
	})
}

// revokeFence is what runs first in each item's removal transaction: the
// subject's lock and the legal holds (GuardDestruction), and the item
// recorded as revoked by this run when its provider revoked it, so that the
// receipt counts exactly what was revoked, once.
func (s *Service) revokeFence(r *ErasureRequest) RevokeFence {
	return func(ctx context.Context, tx pgx.Tx, itemID string, revoked bool) error {
		if err := GuardDestruction(ctx, tx, r.subjectID); err != nil {
			return err
		}
		if !revoked {
			return nil
		}
		_, err := tx.Exec(ctx, `
			UPDATE erasure_requests
			SET steps = jsonb_set(steps, '{revoked_items}', COALESCE(steps->'revoked_items', '[]'::jsonb) || to_jsonb($2::text))
			WHERE id = $1 AND status IN ($3, $4) AND NOT COALESCE(steps->'revoked_items', '[]'::jsonb) ? $2`,
			r.ID, itemID, ErasureApproved, ErasureNeedsAttention)
		if err != nil {
			return fmt.Errorf("compliance: erasure: record revoked item: %w", postgres.Translate(err))
		}
		return nil
	}
}

func (s *Service) hook(step string) error {
	if s.stepHook == nil {
		return nil
	}
	return s.stepHook(step)
}

func (s *Service) saveSteps(ctx context.Context, r *ErasureRequest) error {
	raw, err := json.Marshal(r.steps)
	if err != nil {
		return fmt.Errorf("compliance: erasure steps: %w", err)
	}
	_, err = s.db.Pool.Exec(ctx, `UPDATE erasure_requests SET steps = $2 WHERE id = $1 AND status IN ($3, $4)`,
		r.ID, raw, ErasureApproved, ErasureNeedsAttention)
	if err != nil {
		return fmt.Errorf("compliance: erasure steps: %w", postgres.Translate(err))
	}
	return nil
}

// shred destroys the subject's keys, under the subject's lock, once no
// hold names them and nothing of theirs is live at a provider.
func (s *Service) shred(ctx context.Context, r *ErasureRequest) error {
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		if err := GuardDestruction(ctx, tx, r.subjectID); err != nil {
			return err
		}
		for _, rv := range s.revokers {
			n, err := rv.Live(ctx, tx, r.subjectID)
			if err != nil {
				return err
			}
			if n > 0 {
				return errStillLive
			}
		}
		n, err := s.keys.DestroySubjectKeys(ctx, tx, r.subjectID)
		if err != nil {
			return err
		}
		at := s.clock.Now().UTC()
		r.steps.KeysDestroyed, r.steps.KeysDestroyedAt = &n, &at
		raw, err := json.Marshal(r.steps)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE erasure_requests SET steps = $2 WHERE id = $1`, r.ID, raw); err != nil {
			return fmt.Errorf("compliance: erasure steps: %w", postgres.Translate(err))
		}
		return s.auditor.AppendPseudonymous(ctx, tx, audit.Entry{
			ActorKind: audit.ActorSystem, Actor: "erasure", Action: "erasure.keys_destroyed", Target: r.ID,
			Outcome: audit.OutcomeSuccess, Details: map[string]any{"subject_keys": n},
		}, r.SubjectPseudonym)
	})
}

// deleteRows deletes the subject's rows in every table the catalog shows,
// writes the receipt and completes the request, in one transaction: a crash
// leaves either all of it or none.
func (s *Service) deleteRows(ctx context.Context, r *ErasureRequest) error {
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		// The subject first, as everywhere: a hold that committed after the
		// shred still stops the rows' deletion.
		if err := GuardDestruction(ctx, tx, r.subjectID); err != nil {
			return err
		}
		var status string
		if err := tx.QueryRow(ctx, `SELECT status FROM erasure_requests WHERE id = $1 FOR UPDATE`, r.ID).Scan(&status); err != nil {
			return fmt.Errorf("compliance: erasure: %w", postgres.Translate(err))
		}
		if !running(status) {
			return nil // another run completed it
		}
		// A seal that raced the shred (the subject still existed, so a
		// request of theirs could make a new first key) left a key the
		// catalog below cannot see: the key store is its own schema.
		if _, err := s.keys.DestroySubjectKeys(ctx, tx, r.subjectID); err != nil {
			return err
		}
		erased, err := deleteSubjectRows(ctx, tx, r.subjectID)
		if err != nil {
			return err
		}
		now := s.clock.Now().UTC()
		rc := Receipt{
			RequestID: r.ID, SubjectPseudonym: r.SubjectPseudonym, RequestedBy: r.RequestedBy, ApprovedBy: r.ApprovedBy,
			RequestedAt: r.RequestedAt, CompletedAt: now, Erased: erased,
		}
		if r.ApprovedAt != nil {
			rc.ApprovedAt = *r.ApprovedAt
		}
		rc.ProviderItemsRevoked = len(r.steps.RevokedItems)
		if r.steps.Revoked != nil && *r.steps.Revoked > rc.ProviderItemsRevoked {
			rc.ProviderItemsRevoked = *r.steps.Revoked // a run begun before items were recorded one by one
		}
		if r.steps.KeysDestroyed != nil {
			rc.SubjectKeysDestroyed, rc.KeysDestroyedAt = *r.steps.KeysDestroyed, *r.steps.KeysDestroyedAt
		}
		raw, err := json.Marshal(rc)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			UPDATE erasure_requests SET status = $2, completed_at = $3, receipt = $4, erased_subject_id = NULL, last_error = ''
			WHERE id = $1`, r.ID, ErasureCompleted, now, raw); err != nil {
			return fmt.Errorf("compliance: erasure: complete: %w", postgres.Translate(err))
		}
		details := map[string]any{"provider_items_revoked": rc.ProviderItemsRevoked, "subject_keys": rc.SubjectKeysDestroyed}
		for t, n := range erased {
			details["erased_"+t] = n
		}
		return s.auditor.AppendPseudonymous(ctx, tx, audit.Entry{
			ActorKind: audit.ActorSystem, Actor: "erasure", Action: "erasure.completed", Target: r.ID,
			Outcome: audit.OutcomeSuccess, Details: details,
		}, r.SubjectPseudonym)
	})
}
