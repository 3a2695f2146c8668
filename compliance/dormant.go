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

// DormantClass is the retention class of people: subjects who have not used
// kluis (no request with their token, no link, no reveal of their
// credentials) for its period are erased through the erasure pipeline,
// holds respected. Its setting is KLUIS_RETENTION_DORMANT_SUBJECTS; it is off
// unless set.
const DormantClass = "dormant_subjects"

// The system actors of a dormant subject's erasure: the job requests it and
// the retention policy the operator configured approves it, so that the
// request's two names differ as every erasure's must and the receipt says
// which rule erased the person.
const (
	dormantRequester = "system:retention-purge"
	dormantApprover  = "system:retention-policy"
)

// defaultDormantBatch bounds the subjects one run erases; the rest wait for
// the next run.
const defaultDormantBatch = 500

// DormantReport says what one pass over dormant subjects did (or, in a dry
// run, would do).
type DormantReport struct {
	// Erased counts the subjects whose erasure completed in this pass
	// (in a dry run: would be started).
	Erased int64 `json:"erased"`
	// Started counts erasures approved that did not complete in the pass
	// (a provider down, say): the erasure-resume job finishes them.
	Started int64 `json:"started"`
	// Held counts dormant subjects kept because a legal hold names them.
	Held int64 `json:"held"`
	// Active counts candidates found active after all (a reveal or a link
	// in the audit log since the cutoff: their last_seen_at moves up), or
	// seen or taken by another run between the listing and the erasure.
	Active int64 `json:"active"`
}

// dormantCandidate is a subject whose last request is older than the cutoff.
type dormantCandidate struct {
	id, externalID string
}

// EraseDormant erases, through the erasure pipeline, the subjects not seen
// since now minus period: no request with their token (subjects.last_seen_at)
// and no audited action by them (a link) or by a service about them (a
// reveal) since then. A subject under a legal hold is kept
// and counted; so is one whose erasure is already open. With dryRun nothing
// is written and the report says what would go. period must be positive.
func (s *Service) EraseDormant(ctx context.Context, period time.Duration, batch int, dryRun bool) (DormantReport, error) {
	var rep DormantReport
	if period <= 0 {
		return rep, kluis.Errorf(kluis.EInvalid, "the dormancy period must be positive")
	}
	if batch <= 0 {
		batch = defaultDormantBatch
	}
	cutoff := s.clock.Now().Add(-period)
	cands, err := s.dormantCandidates(ctx, cutoff, batch)
	if err != nil {
		return rep, err
	}
	for _, c := range cands {
		if err := s.eraseIfDormant(ctx, c, cutoff, dryRun, &rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// dormantCandidates lists subjects last seen before cutoff, oldest first,
// that no erasure holds already.
func (s *Service) dormantCandidates(ctx context.Context, cutoff time.Time, batch int) ([]dormantCandidate, error) {
	rows, err := s.db.Pool.Query(ctx, `
		SELECT s.id, s.external_id FROM subjects s
		WHERE s.last_seen_at < $1 AND s.created_at < $1 AND s.erasing_since IS NULL
		  AND NOT EXISTS (SELECT 1 FROM erasure_requests e WHERE e.erased_subject_id = s.id)
		ORDER BY s.last_seen_at, s.id LIMIT $2`, cutoff, batch)
	if err != nil {
		return nil, fmt.Errorf("compliance: dormant subjects: %w", postgres.Translate(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (dormantCandidate, error) {
		var c dormantCandidate
		return c, r.Scan(&c.id, &c.externalID)
	})
	if err != nil {
		return nil, fmt.Errorf("compliance: dormant subjects: %w", postgres.Translate(err))
	}
	return out, nil
}

// eraseIfDormant checks one candidate against the audit log and erases it.
func (s *Service) eraseIfDormant(ctx context.Context, c dormantCandidate, cutoff time.Time, dryRun bool, rep *DormantReport) error {
	pseudonym := s.auditor.Pseudonym(c.externalID)
	last, err := lastActivity(ctx, s.db.Pool, pseudonym, cutoff)
	if err != nil {
		return err
	}
	if last != nil {
		rep.Active++
		if dryRun {
			return nil
		}
		_, err := s.db.Pool.Exec(ctx, `UPDATE subjects SET last_seen_at = $2 WHERE id = $1 AND last_seen_at < $2`, c.id, *last)
		if err != nil {
			return fmt.Errorf("compliance: dormant subjects: %w", postgres.Translate(err))
		}
		return nil
	}
	h, err := held(ctx, s.db.Pool, c.id)
	if err != nil {
		return err
	}
	if h {
		rep.Held++
		return nil
	}
	if dryRun {
		rep.Erased++
		return nil
	}
	id, err := s.requestDormantErasure(ctx, c, pseudonym, cutoff)
	switch {
	case kluis.ErrorCode(err) == ELegalHold:
		rep.Held++ // a hold committed since the check above
		return nil
	case kluis.ErrorCode(err) == kluis.EConflict:
		rep.Active++ // seen again, or an erasure opened meanwhile
		return nil
	case err != nil:
		return err
	}
	if err := s.execute(ctx, id); err != nil && kluis.ErrorCode(err) != kluis.EUnavailable && kluis.ErrorCode(err) != ELegalHold {
		return err
	}
	r, err := s.GetErasure(ctx, id)
	if err != nil {
		return err
	}
	if r.Status == ErasureCompleted || r.Status == ErasureCompletedWithExceptions {
		rep.Erased++
	} else {
		rep.Started++
	}
	return nil
}

// lastActivity answers the time of the newest audit entry since cutoff made
// by the user, or by a service about them (a reveal), or nil. Staff looking
// at a person, providers' notices and kluis's own jobs do not keep them.
// The audit log is indexed by subject pseudonym and by user actor.
func lastActivity(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, pseudonym string, cutoff time.Time) (*time.Time, error) {
	var last *time.Time
	err := q.QueryRow(ctx, `
		SELECT max(occurred_at) FROM (
			SELECT occurred_at FROM audit_entries
			WHERE subject_pseudonym = $1 AND occurred_at >= $2 AND actor_kind IN ('user', 'service')
			UNION ALL
			SELECT occurred_at FROM audit_entries
			WHERE actor_kind = 'user' AND actor = $1 AND occurred_at >= $2
		) AS a`, pseudonym, cutoff).Scan(&last)
	if err != nil {
		return nil, fmt.Errorf("compliance: dormant subjects: %w", postgres.Translate(err))
	}
	return last, nil
}

// requestDormantErasure records an approved erasure of the subject and
// fences them, in one transaction under the subject's lock: a hold that
// commits first refuses it (ELegalHold), one that commits after stops the
// run before anything is destroyed, as for any erasure.
func (s *Service) requestDormantErasure(ctx context.Context, c dormantCandidate, pseudonym string, cutoff time.Time) (string, error) {
	id := kluis.NewID(kluis.PrefixErasure)
	now := s.clock.Now().UTC().Truncate(time.Microsecond)
	reason := "retention: dormant since before " + cutoff.UTC().Format(time.DateOnly) + " (" + DormantClass + ")"
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		if err := GuardDestruction(ctx, tx, c.id); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `
			INSERT INTO erasure_requests (id, erased_subject_id, subject_pseudonym, reason, status, requested_by, requested_at, approved_by, approved_at)
			SELECT $1, $2, $3, $4, $5, $6, $7, $8, $7
			WHERE EXISTS (SELECT 1 FROM subjects WHERE id = $2 AND erasing_since IS NULL AND last_seen_at < $9)`,
			id, c.id, pseudonym, reason, ErasureApproved, dormantRequester, now, dormantApprover, cutoff)
		if err != nil {
			return fmt.Errorf("compliance: dormant erasure: %w", postgres.Translate(err))
		}
		if tag.RowsAffected() == 0 {
			// Seen again, erased by another run, or already erasing.
			return kluis.Errorf(kluis.EConflict, "the subject is no longer dormant")
		}
		if _, err := tx.Exec(ctx, `UPDATE subjects SET erasing_since = $2, erasure_request_id = $3 WHERE id = $1`, c.id, now, id); err != nil {
			return fmt.Errorf("compliance: fence subject: %w", postgres.Translate(err))
		}
		for _, e := range []audit.Entry{
			{ActorKind: audit.ActorSystem, Actor: dormantRequester, Action: "erasure.requested", Target: id, Outcome: audit.OutcomeSuccess,
				Details: map[string]any{"class": DormantClass}},
			{ActorKind: audit.ActorSystem, Actor: dormantApprover, Action: "erasure.approve", Target: id, Outcome: audit.OutcomeSuccess,
				Details: map[string]any{"class": DormantClass}},
		} {
			if err := s.auditor.AppendPseudonymous(ctx, tx, e, pseudonym); err != nil {
				return err
			}
		}
		return nil
	})
	return id, err
}
