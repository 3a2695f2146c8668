package compliance

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
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
// (ELegalHold). The completion is EConflict (audited, reason still_live)
// while the revokers count more live at a provider than the unrevoked
// items it would name (an exchange in flight, or an item linked since the
// last pass): the erasure must be resumed first. Every step is audited in
// the transaction that makes it.
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
	entry := audit.Entry{ActorKind: audit.ActorStaff, Actor: by.ID, Target: r.ID, RequestID: by.RequestID, Details: map[string]any{}}
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
	case err == errLiveBeyondExceptions:
		return r, s.refuseCompletion(ctx, entry, r.SubjectPseudonym, "still_live", err)
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
func (s *Service) refuseCompletion(ctx context.Context, e audit.Entry, pseudonym, why string, refusal error) error {
	e.Action, e.Outcome = "erasure.complete_with_exceptions", audit.OutcomeDenied
	e.Details["reason"] = why
	if err := s.recordPseudonymous(ctx, e, pseudonym); err != nil {
		return err
	}
	return refusal
}

// acknowledgeExceptions records the first staff member's acknowledgement.
func (s *Service) acknowledgeExceptions(ctx context.Context, tx pgx.Tx, by Staff, r ErasureRequest, e audit.Entry) error {
	if _, err := tx.Exec(ctx, `
		UPDATE erasure_requests SET exceptions_acknowledged_by = $2, exceptions_acknowledged_at = $3
		WHERE id = $1 AND status = $4 AND exceptions_acknowledged_by IS NULL`,
		r.ID, by.ID, s.clock.Now().UTC(), ErasureNeedsAttention); err != nil {
		return fmt.Errorf("compliance: acknowledge exceptions: %w", postgres.Translate(err))
	}
	e.Action, e.Outcome = "erasure.exceptions_acknowledged", audit.OutcomeSuccess
	e.Details["unrevoked_items"] = unrevokedIDs(r.steps.Unrevoked)
	return s.auditor.AppendPseudonymous(ctx, tx, e, r.SubjectPseudonym)
}

// completeWithExceptions destroys kluis's own copies of the subject (keys
// first, then rows), writes the receipt naming the unrevoked items, and
// completes the request, in the caller's transaction.
func (s *Service) completeWithExceptions(ctx context.Context, tx pgx.Tx, by Staff, r ErasureRequest, e audit.Entry) error {
	if err := s.liveOnlyAsExcepted(ctx, tx, r); err != nil {
		return err
	}
	keys, err := s.keys.DestroySubjectKeys(ctx, tx, r.subjectID)
	if err != nil {
		return err
	}
	shredAt := s.clock.Now().UTC()
	if r.steps.KeysDestroyed != nil {
		keys += *r.steps.KeysDestroyed
	}
	if err := s.auditor.AppendPseudonymous(ctx, tx, audit.Entry{
		ActorKind: audit.ActorSystem, Actor: "erasure", Action: "erasure.keys_destroyed", Target: r.ID,
		Outcome: audit.OutcomeSuccess, Details: map[string]any{"subject_keys": keys},
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
	e.Action, e.Outcome = "erasure.completed_with_exceptions", audit.OutcomeSuccess
	e.Details["unrevoked_items"] = unrevokedIDs(r.steps.Unrevoked)
	e.Details["acknowledged_by"] = r.ExceptionsAcknowledgedBy
	e.Details["subject_keys"] = keys
	for t, n := range erased {
		e.Details["erased_"+t] = n
	}
	return s.auditor.AppendPseudonymous(ctx, tx, e, r.SubjectPseudonym)
}

// errLiveBeyondExceptions refuses a completion with exceptions while the
// subject has more live at a provider than the items the staff accepted to
// leave unrevoked (an exchange in flight, say): its token could no longer
// be revoked once the keys are gone, and the receipt would not name it.
var errLiveBeyondExceptions = kluis.Errorf(kluis.EConflict,
	"the subject has access live at a provider, or an exchange in flight, that is not among the unrevoked items; resume the erasure first")

// liveOnlyAsExcepted checks, in the completion's transaction (which holds
// the subject's lock), that what the revokers count as live is no more than
// the unrevoked items the receipt will name.
func (s *Service) liveOnlyAsExcepted(ctx context.Context, tx pgx.Tx, r ErasureRequest) error {
	live := 0
	for _, rv := range s.revokers {
		n, err := rv.Live(ctx, tx, r.subjectID)
		if err != nil {
			return err
		}
		live += n
	}
	if live > len(r.steps.Unrevoked) {
		return errLiveBeyondExceptions
	}
	return nil
}

func unrevokedIDs(items []UnrevokedItem) []string {
	ids := make([]string, len(items))
	for i, u := range items {
		ids[i] = u.ItemID
	}
	return ids
}
