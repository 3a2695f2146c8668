package compliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
)

// Erasure request statuses.
const (
	ErasurePending   = "pending_approval"
	ErasureApproved  = "approved"
	ErasureCompleted = "completed"
)

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
	LastError string   `json:"last_error,omitempty"`
	Receipt   *Receipt `json:"receipt,omitempty"`

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
}

// erasureSteps is the progress record (the steps column).
type erasureSteps struct {
	Revoked         *int       `json:"revoked,omitempty"`
	KeysDestroyed   *int       `json:"keys_destroyed,omitempty"`
	KeysDestroyedAt *time.Time `json:"keys_destroyed_at,omitempty"`
}

const erasureColumns = `id, status, subject_pseudonym, reason, requested_by, requested_at, approved_by, approved_at,
	completed_at, last_error, receipt, erased_subject_id, steps`

func scanErasure(row pgx.Row) (ErasureRequest, error) {
	var (
		r          ErasureRequest
		approvedBy *string
		subjectID  *string
		receipt    []byte
		steps      []byte
	)
	err := row.Scan(&r.ID, &r.Status, &r.SubjectPseudonym, &r.Reason, &r.RequestedBy, &r.RequestedAt, &approvedBy,
		&r.ApprovedAt, &r.CompletedAt, &r.LastError, &receipt, &subjectID, &steps)
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
		return s.auditor.Append(ctx, tx, Entry{
			ActorKind: ActorStaff, Actor: by.ID, Action: "erasure.requested", Target: r.ID,
			Outcome: OutcomeSuccess, Subject: subject, RequestID: by.RequestID,
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
// Approving an approved request runs it again (it resumes); a completed one
// is returned as it is. When the approval commits but the run stops short
// (a provider down, say), the request is returned approved with no error: a
// later run, or the erasure-resume job, completes it.
func (s *Service) ApproveErasure(ctx context.Context, by Staff, id string) (ErasureRequest, error) {
	r, err := s.GetErasure(ctx, id)
	if err != nil {
		return r, err
	}
	if r.Status == ErasureCompleted {
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
	entry := Entry{ActorKind: ActorStaff, Actor: by.ID, Action: "erasure.approve", Target: r.ID, RequestID: by.RequestID}
	if by.ID == r.RequestedBy {
		entry.Outcome, entry.Details = OutcomeDenied, map[string]any{"reason": "requester_cannot_approve"}
		if err := s.recordPseudonymous(ctx, entry, r.SubjectPseudonym); err != nil {
			return err
		}
		return kluis.Errorf(kluis.EForbidden, "an erasure request must be approved by another staff member")
	}
	refused := false
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		refused = false
		h, err := held(ctx, tx, r.subjectID)
		if err != nil {
			return err
		}
		if h {
			refused = true
			return nil
		}
		tag, err := tx.Exec(ctx, `
			UPDATE erasure_requests SET status = $2, approved_by = $3, approved_at = $4
			WHERE id = $1 AND status = $5`, r.ID, ErasureApproved, by.ID, s.clock.Now().UTC(), ErasurePending)
		if err != nil {
			return fmt.Errorf("compliance: approve erasure: %w", postgres.Translate(err))
		}
		if tag.RowsAffected() == 0 {
			return nil // approved meanwhile by someone else: run it all the same
		}
		entry.Outcome = OutcomeSuccess
		return s.auditor.appendPseudonymous(ctx, tx, entry, r.SubjectPseudonym)
	})
	if err != nil {
		return err
	}
	if refused {
		entry.Outcome, entry.Details = OutcomeDenied, map[string]any{"reason": "legal_hold"}
		if err := s.recordPseudonymous(ctx, entry, r.SubjectPseudonym); err != nil {
			return err
		}
		return kluis.Errorf(ELegalHold, "the subject is under a legal hold; the request stays open until it is lifted")
	}
	return nil
}

func (s *Service) recordPseudonymous(ctx context.Context, e Entry, pseudonym string) error {
	err := s.db.InTx(ctx, func(tx pgx.Tx) error { return s.auditor.appendPseudonymous(ctx, tx, e, pseudonym) })
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

// execute carries out the approved request id from its last recorded step:
// revoke at the providers, destroy the keys, delete the rows and write the
// receipt. Each step is safe to repeat.
func (s *Service) execute(ctx context.Context, id string) error {
	r, err := s.GetErasure(ctx, id)
	if err != nil || r.Status != ErasureApproved {
		return err
	}
	err = s.runSteps(ctx, &r)
	if err != nil {
		msg := kluis.ErrorMessage(err)
		_, _ = s.db.Pool.Exec(context.WithoutCancel(ctx), `UPDATE erasure_requests SET last_error = $2 WHERE id = $1 AND status = $3`,
			id, msg, ErasureApproved)
	}
	return err
}

// runSteps checks the legal holds again before anything is destroyed: an
// approved erasure can wait days (a provider down) and a hold placed
// meanwhile must stop it, not only a hold present at approval. The shred
// checks once more under the subject's row lock, which a hold being placed
// (its foreign key) conflicts with, so the two cannot pass each other there.
func (s *Service) runSteps(ctx context.Context, r *ErasureRequest) error {
	if r.steps.KeysDestroyed == nil {
		if err := s.refuseIfHeld(ctx, s.db.Pool, r); err != nil {
			return err
		}
	}
	if r.steps.Revoked == nil {
		n := 0
		for _, rv := range s.revokers {
			c, err := rv.RevokeSubject(ctx, r.subjectID)
			if err != nil {
				return fmt.Errorf("compliance: erasure: revoke at provider: %w", err)
			}
			n += c
		}
		r.steps.Revoked = &n
		if err := s.saveSteps(ctx, r); err != nil {
			return err
		}
		if err := s.hook(StepRevoke); err != nil {
			return err
		}
	}
	// Crypto-shredding comes first among the data steps: from its commit on,
	// no copy of the subject's sealed records opens, wherever it survives.
	if r.steps.KeysDestroyed == nil {
		if err := s.shred(ctx, r); err != nil {
			return err
		}
		if err := s.hook(StepShred); err != nil {
			return err
		}
	}
	if err := s.deleteRows(ctx, r); err != nil {
		return err
	}
	return s.hook(StepDelete)
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
	_, err = s.db.Pool.Exec(ctx, `UPDATE erasure_requests SET steps = $2 WHERE id = $1 AND status = $3`, r.ID, raw, ErasureApproved)
	if err != nil {
		return fmt.Errorf("compliance: erasure steps: %w", postgres.Translate(err))
	}
	return nil
}

// refuseIfHeld fails with ELegalHold while a hold names the request's
// subject.
func (s *Service) refuseIfHeld(ctx context.Context, q vault.Querier, r *ErasureRequest) error {
	h, err := held(ctx, q, r.subjectID)
	if err != nil {
		return err
	}
	if h {
		return kluis.Errorf(ELegalHold, "the subject is under a legal hold; the erasure waits until it is lifted")
	}
	return nil
}

func (s *Service) shred(ctx context.Context, r *ErasureRequest) error {
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		// FOR UPDATE conflicts with the key-share lock a legal hold's insert
		// takes on the subject: a hold committed before this point is seen
		// below, and one placed after it waits for the shred to commit.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM subjects WHERE id = $1 FOR UPDATE`, r.subjectID); err != nil {
			return fmt.Errorf("compliance: erasure: lock subject: %w", postgres.Translate(err))
		}
		if err := s.refuseIfHeld(ctx, tx, r); err != nil {
			return err
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
		return s.auditor.appendPseudonymous(ctx, tx, Entry{
			ActorKind: ActorSystem, Actor: "erasure", Action: "erasure.keys_destroyed", Target: r.ID,
			Outcome: OutcomeSuccess, Details: map[string]any{"subject_keys": n},
		}, r.SubjectPseudonym)
	})
}

// deleteRows deletes the subject's rows in every table the catalog shows,
// writes the receipt and completes the request, in one transaction: a crash
// leaves either all of it or none.
func (s *Service) deleteRows(ctx context.Context, r *ErasureRequest) error {
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		var status string
		if err := tx.QueryRow(ctx, `SELECT status FROM erasure_requests WHERE id = $1 FOR UPDATE`, r.ID).Scan(&status); err != nil {
			return fmt.Errorf("compliance: erasure: %w", postgres.Translate(err))
		}
		if status != ErasureApproved {
			return nil // another run completed it
		}
		// A seal that raced the shred (the subject still existed, so a
		// request of theirs could make a new first key) left a key the
		// catalog below cannot see: the key store is its own schema.
		if _, err := s.keys.DestroySubjectKeys(ctx, tx, r.subjectID); err != nil {
			return err
		}
		cat, err := loadCatalog(ctx, tx)
		if err != nil {
			return err
		}
		plan, err := cat.subjectPlan()
		if err != nil {
			return err
		}
		erased := map[string]int64{}
		for _, step := range plan {
			tag, err := tx.Exec(ctx, fmt.Sprintf(`DELETE FROM %s WHERE %s`, quoteIdent(step.Table), step.Where), r.subjectID)
			if err != nil {
				return fmt.Errorf("compliance: erasure: delete from %s: %w", step.Table, postgres.Translate(err))
			}
			if n := tag.RowsAffected(); n > 0 {
				erased[step.Table] = n
			}
		}
		now := s.clock.Now().UTC()
		rc := Receipt{
			RequestID: r.ID, SubjectPseudonym: r.SubjectPseudonym, RequestedBy: r.RequestedBy, ApprovedBy: r.ApprovedBy,
			RequestedAt: r.RequestedAt, CompletedAt: now, Erased: erased,
		}
		if r.ApprovedAt != nil {
			rc.ApprovedAt = *r.ApprovedAt
		}
		if r.steps.Revoked != nil {
			rc.ProviderItemsRevoked = *r.steps.Revoked
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
		return s.auditor.appendPseudonymous(ctx, tx, Entry{
			ActorKind: ActorSystem, Actor: "erasure", Action: "erasure.completed", Target: r.ID,
			Outcome: OutcomeSuccess, Details: details,
		}, r.SubjectPseudonym)
	})
}
