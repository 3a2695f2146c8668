package verification

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/events"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
)

func dbErr(op string, err error) error {
	return fmt.Errorf("verification: %s: %w", op, postgres.Translate(err))
}

const verificationColumns = `id, account_id, subject_id, requested_method, method, COALESCE(answer_kind, ''), status,
	attempts_remaining, COALESCE(rail, ''), COALESCE(rail_ref, ''), expires_at, created_at, updated_at, provider_checked`

func scanVerification(r pgx.Row) (Verification, error) {
	var v Verification
	var status string
	err := r.Scan(&v.ID, &v.AccountID, &v.SubjectID, &v.RequestedMethod, &v.Method, &v.AnswerKind, &status,
		&v.AttemptsRemaining, &v.Rail, &v.RailRef, &v.ExpiresAt, &v.CreatedAt, &v.UpdatedAt, &v.ProviderChecked)
	v.Status = Status(status)
	return v, err
}

// getVerification reads a verification; with subjectID set, only that
// subject's (another's is ENotFound, as is an unknown id).
func getVerification(ctx context.Context, q postgres.Querier, id, subjectID string) (Verification, error) {
	if !kluis.ValidID(kluis.PrefixVerification, id) {
		return Verification{}, notFound()
	}
	v, err := scanVerification(q.QueryRow(ctx, `SELECT `+verificationColumns+` FROM verifications
		WHERE id = $1 AND ($2 = '' OR subject_id = $2)`, id, subjectID))
	if err != nil {
		return Verification{}, dbErr("read verification", err)
	}
	return v, nil
}

// answerMAC reads the stored HMAC of the answer.
func answerMAC(ctx context.Context, q postgres.Querier, id string) ([]byte, error) {
	var m []byte
	if err := q.QueryRow(ctx, `SELECT answer_mac FROM verifications WHERE id = $1`, id).Scan(&m); err != nil {
		return nil, dbErr("read answer", err)
	}
	return m, nil
}

var terminal = []string{string(StatusVerified), string(StatusFailed), string(StatusExpired), string(StatusReturned)}

// applyOrReread applies ev to v in tx, as applyTransition does; when
// another writer moved the verification first, it reads it as it now is
// instead. It reports whether ev was applied; on an error it gives v back
// unchanged (a retried transaction starts again from it).
func (s *Service) applyOrReread(ctx context.Context, tx pgx.Tx, v Verification, ev EventKind, railRef string, actor audit.Actor) (Verification, bool, error) {
	got, ok, err := s.applyTransition(ctx, tx, v, ev, railRef, actor)
	switch {
	case err != nil:
		return v, false, err
	case ok:
		return got, true, nil
	}
	if got, err = getVerification(ctx, tx, v.ID, ""); err != nil {
		return v, false, err
	}
	return got, false, nil
}

// applyTransition moves the verification from v.Status by ev as one
// conditional UPDATE (WHERE status = the expected one; for a right answer
// also attempts left and the window open), then carries out the effects
// and writes the audit entry, all in tx. ok is false when the row was no
// longer in the expected state (another request won): nothing changed.
func (s *Service) applyTransition(ctx context.Context, tx pgx.Tx, v Verification, ev EventKind, railRef string, actor audit.Actor) (Verification, bool, error) {
	next, effects, err := Next(State{v.Status, v.AttemptsRemaining}, ev)
	if err != nil {
		return v, false, kluis.Wrap(kluis.EConflict, conflictMessage(v.Status), err)
	}
	now := s.now()
	extra := ""
	if ev == EventRightAnswer {
		extra = ` AND attempts_remaining > 0 AND expires_at > $4`
	}
	var ref *string
	if railRef != "" {
		ref = &railRef
	}
	got, err := scanVerification(tx.QueryRow(ctx, `
		UPDATE verifications SET status = $3, updated_at = $4,
			rail_ref = COALESCE($5, rail_ref),
			posted_at = CASE WHEN $3 = 'posted' THEN $4 ELSE posted_at END,
			finished_at = CASE WHEN $3 = ANY($6::text[]) THEN $4 ELSE finished_at END
		WHERE id = $1 AND status = $2`+extra+`
		RETURNING `+verificationColumns,
		v.ID, string(v.Status), string(next.Status), now, ref, terminal))
	if errors.Is(err, pgx.ErrNoRows) {
		return v, false, nil
	}
	if err != nil {
		return v, false, dbErr("update verification", err)
	}
	return got, true, s.effects(ctx, tx, got, v.Status, effects, actor, nil)
}

// spendAttempt takes one attempt for a wrong answer: one conditional UPDATE
// that never goes below zero and fails the verification when it takes the
// last one. ok is false when no attempt could be taken (not posted, none
// left: another request got there first).
func (s *Service) spendAttempt(ctx context.Context, tx pgx.Tx, v Verification, actor audit.Actor) (Verification, bool, error) {
	now := s.now()
	got, err := scanVerification(tx.QueryRow(ctx, `
		UPDATE verifications SET attempts_remaining = attempts_remaining - 1, updated_at = $2,
			status = CASE WHEN attempts_remaining = 1 THEN 'failed' ELSE status END,
			finished_at = CASE WHEN attempts_remaining = 1 THEN $2 ELSE finished_at END
		WHERE id = $1 AND status = 'posted' AND attempts_remaining > 0 AND expires_at > $2
		RETURNING `+verificationColumns, v.ID, now))
	if errors.Is(err, pgx.ErrNoRows) {
		return v, false, nil
	}
	if err != nil {
		return v, false, dbErr("spend attempt", err)
	}
	// The machine says what the update must have done; a difference is a
	// bug, and the transaction rolls back.
	want, effects, err := Next(State{StatusPosted, got.AttemptsRemaining + 1}, EventWrongAnswer)
	if err != nil || want != (State{got.Status, got.AttemptsRemaining}) {
		return v, false, kluis.Wrap(kluis.EInternal, "internal error", fmt.Errorf("verification: attempt update disagrees with the state machine"))
	}
	return got, true, s.effects(ctx, tx, got, StatusPosted, effects, actor, map[string]any{"attempts_remaining": got.AttemptsRemaining})
}

// effects carries out a transition's effects and writes its audit entry.
func (s *Service) effects(ctx context.Context, tx pgx.Tx, v Verification, from Status, effects []Effect, actor audit.Actor, details map[string]any) error {
	for _, e := range effects {
		if e.AccountStatus != "" {
			// A verified account stays verified whatever later attempts do;
			// a revoked one (consent withdrawn) is never verified again.
			if err := s.accounts.SetVerificationStatus(ctx, tx, v.AccountID, e.AccountStatus, s.now()); err != nil {
				return err
			}
		}
		if e.Emit != "" {
			if _, err := events.Enqueue(ctx, tx, events.Event{Subject: v.SubjectID, Type: e.Emit, OccurredAt: s.now(), Data: map[string]string{
				"verification_id": v.ID, "account_id": v.AccountID, "status": string(v.Status),
			}}); err != nil {
				return err
			}
		}
	}
	if v.Status == StatusFailed && from != StatusFailed && !uncounted(effects) {
		if err := s.recordFailure(ctx, tx, v); err != nil {
			return err
		}
	}
	sub := actor.Name
	if actor.Kind != audit.ActorUser {
		var err error
		if sub, err = vault.SubjectKey(ctx, tx, v.SubjectID); err != nil {
			return err
		}
	}
	if details == nil {
		details = map[string]any{}
	}
	details["from"], details["to"], details["account_id"], details["method"] = string(from), string(v.Status), v.AccountID, v.Method
	action := "verification." + string(v.Status)
	if from == v.Status {
		action = "verification.attempt_failed"
	}
	return s.audit.Append(ctx, tx, audit.Entry{
		ActorKind: actor.Kind, Actor: actor.Name, Action: action, Target: v.ID, Outcome: audit.OutcomeSuccess,
		Subject: sub, RequestID: actor.RequestID, Details: details,
	})
}

// conflictMessage says why a verification cannot take an answer or event
// in its status.
func conflictMessage(st Status) string {
	switch st {
	case StatusPending, StatusSent:
		return "the deposits have not posted yet"
	case StatusVerified:
		return "the verification is already verified"
	case StatusFailed:
		return "the verification failed: no attempts are left"
	case StatusExpired:
		return "the verification expired"
	case StatusReturned:
		return "the deposits were returned"
	}
	return "the verification cannot change now"
}

// conflict is the 409 for a verification in st.
func conflict(st Status) error {
	return kluis.Errorf(kluis.EConflict, "%s", conflictMessage(st)).With("status", string(st))
}

// due lists open verifications that need a job's attention.
func due(ctx context.Context, q *postgres.DB, where string, limit int, args ...any) ([]Verification, error) {
	rows, err := q.Pool.Query(ctx, `SELECT `+verificationColumns+` FROM verifications WHERE `+where+` LIMIT `+fmt.Sprint(limit), args...)
	if err != nil {
		return nil, dbErr("list verifications", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Verification, error) { return scanVerification(r) })
	if err != nil {
		return nil, dbErr("list verifications", err)
	}
	return out, nil
}

// uncounted reports whether a transition's failure does not count towards
// the lock.
func uncounted(effects []Effect) bool {
	for _, e := range effects {
		if e.Uncounted {
			return true
		}
	}
	return false
}
