package compliance

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// CompleteWithExceptions is how two staff members finish a needs_attention
// erasure whose provider keeps refusing to revoke: the first call records
// by's acknowledgement (the request stays needs_attention, naming them);
// the call of another staff member completes it as
// completed_with_exceptions: the subject's keys are destroyed and their rows
// deleted, as a normal run does after revoking, and the receipt names each
// item the provider did not revoke. The one who acknowledged cannot also
// complete (EForbidden, audited), so one person alone never can. A request
// in any other status is EConflict; a legal hold refuses both steps
// (ELegalHold). Every step is audited in the transaction that makes it.
func (s *Service) CompleteWithExceptions(ctx context.Context, by Staff, id string) (ErasureRequest, error) {
	r, err := s.GetErasure(ctx, id)
	if err != nil {
		return r, err
	}
	if r.Status != ErasureNeedsAttention {
		return r, kluis.Errorf(kluis.EConflict, "only a needs_attention erasure can be completed with exceptions; this one is %s", r.Status)
	}
	// No pass of the run (an approve call) while the keys go.
	release, err := s.claimRun(ctx, id)
	if err != nil {
		return r, err
	}
	defer release()
	entry := Entry{ActorKind: ActorStaff, Actor: by.ID, Target: r.ID, RequestID: by.RequestID, Details: map[string]any{}}
	denied := false
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		denied = false
		// The subject first, as everywhere; a hold stops both steps.
		if err := GuardDestruction(ctx, tx, r.subjectID); err != nil {
			return err
		}
		cur, err := scanErasure(tx.QueryRow(ctx, `SELECT `+erasureColumns+` FROM erasure_requests WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return fmt.Errorf("compliance: erasure: %w", postgres.Translate(err))
		}
		switch {
		case cur.Status != ErasureNeedsAttention:
			return kluis.Errorf(kluis.EConflict, "only a needs_attention erasure can be completed with exceptions; this one is %s", cur.Status)
		case cur.ExceptionsAcknowledgedBy == "":
			return s.acknowledgeExceptions(ctx, tx, by, cur, entry)
		case cur.ExceptionsAcknowledgedBy == by.ID:
			denied = true
			return nil
		}
		return s.completeWithExceptions(ctx, tx, by, cur, entry)
	})
	switch {
	case kluis.ErrorCode(err) == ELegalHold:
		return r, s.refuseCompletion(ctx, entry, r.SubjectPseudonym, "legal_hold", err)
	case err != nil:
		return r, err
	case denied:
		return r, s.refuseCompletion(ctx, entry, r.SubjectPseudonym, "same_staff_member",
			kluis.Errorf(kluis.EForbidden, "another staff member must complete an erasure with exceptions"))
	}
	return s.GetErasure(ctx, id)
}

// refuseCompletion audits a refused completion call and returns the
// refusal; if the audit log cannot take the entry, the caller gets 503.
func (s *Service) refuseCompletion(ctx context.Context, e Entry, pseudonym, why string, refusal error) error {
	e.Action, e.Outcome = "erasure.complete_with_exceptions", OutcomeDenied
	e.Details["reason"] = why
	if err := s.recordPseudonymous(ctx, e, pseudonym); err != nil {
		return err
	}
	return refusal
}

// acknowledgeExceptions records the first staff member's acknowledgement.
func (s *Service) acknowledgeExceptions(ctx context.Context, tx pgx.Tx, by Staff, r ErasureRequest, e Entry) error {
	if _, err := tx.Exec(ctx, `
		UPDATE erasure_requests SET exceptions_acknowledged_by = $2, exceptions_acknowledged_at = $3
		WHERE id = $1 AND status = $4 AND exceptions_acknowledged_by IS NULL`,
		r.ID, by.ID, s.clock.Now().UTC(), ErasureNeedsAttention); err != nil {
		return fmt.Errorf("compliance: acknowledge exceptions: %w", postgres.Translate(err))
	}
	e.Action, e.Outcome = "erasure.exceptions_acknowledged", OutcomeSuccess
	e.Details["unrevoked_items"] = unrevokedIDs(r.steps.Unrevoked)
	return s.auditor.appendPseudonymous(ctx, tx, e, r.SubjectPseudonym)
}

// completeWithExceptions destroys kluis's own copies of the subject (keys
// first, then rows), writes the receipt naming the unrevoked items, and
// completes the request, in the caller's transaction.
func (s *Service) completeWithExceptions(ctx context.Context, tx pgx.Tx, by Staff, r ErasureRequest, e Entry) error {
	keys, err := s.keys.DestroySubjectKeys(ctx, tx, r.subjectID)
	if err != nil {
		return err
	}
	shredAt := s.clock.Now().UTC()
	if r.steps.KeysDestroyed != nil {
		keys += *r.steps.KeysDestroyed
	}
	if err := s.auditor.appendPseudonymous(ctx, tx, Entry{
		ActorKind: ActorSystem, Actor: "erasure", Action: "erasure.keys_destroyed", Target: r.ID,
		Outcome: OutcomeSuccess, Details: map[string]any{"subject_keys": keys},
	}, r.SubjectPseudonym); err != nil {
		return err
	}
	erased, err := deleteSubjectRows(ctx, tx, r.subjectID)
	if err != nil {
		return err
	}
	now := s.clock.Now().UTC()
	rc := Receipt{
		RequestID: r.ID, SubjectPseudonym: r.SubjectPseudonym, RequestedBy: r.RequestedBy, ApprovedBy: r.ApprovedBy,
		RequestedAt: r.RequestedAt, KeysDestroyedAt: shredAt, CompletedAt: now, Erased: erased,
		ProviderItemsRevoked: len(r.steps.RevokedItems), SubjectKeysDestroyed: keys,
		UnrevokedItems: r.steps.Unrevoked, ExceptionsApprovedBy: []string{r.ExceptionsAcknowledgedBy, by.ID},
	}
	if r.ApprovedAt != nil {
		rc.ApprovedAt = *r.ApprovedAt
	}
	if rc.UnrevokedItems == nil {
		rc.UnrevokedItems = []UnrevokedItem{}
	}
	raw, err := json.Marshal(rc)
	if err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `
		UPDATE erasure_requests SET status = $2, completed_at = $3, receipt = $4, erased_subject_id = NULL, last_error = '',
			exceptions_completed_by = $5
		WHERE id = $1 AND status = $6`, r.ID, ErasureCompletedWithExceptions, now, raw, by.ID, ErasureNeedsAttention)
	if err != nil {
		return fmt.Errorf("compliance: complete with exceptions: %w", postgres.Translate(err))
	}
	if tag.RowsAffected() != 1 {
		return kluis.Errorf(kluis.EConflict, "the erasure request changed meanwhile")
	}
	e.Action, e.Outcome = "erasure.completed_with_exceptions", OutcomeSuccess
	e.Details["unrevoked_items"] = unrevokedIDs(r.steps.Unrevoked)
	e.Details["acknowledged_by"] = r.ExceptionsAcknowledgedBy
	e.Details["subject_keys"] = keys
	for t, n := range erased {
		e.Details["erased_"+t] = n
	}
	return s.auditor.appendPseudonymous(ctx, tx, e, r.SubjectPseudonym)
}

func unrevokedIDs(items []UnrevokedItem) []string {
	ids := make([]string, len(items))
	for i, u := range items {
		ids[i] = u.ItemID
	}
	return ids
}
