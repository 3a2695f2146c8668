package compliance

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
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
// that no erasure holds already: the vault lists the dormant subjects page
// by page, and those an erasure request names (one rejected or cancelled, or
// one being opened) are passed over.
func (s *Service) dormantCandidates(ctx context.Context, cutoff time.Time, batch int) ([]dormantCandidate, error) {
	var out []dormantCandidate
	var after *vault.DormantSubject
	for len(out) < batch {
		page, err := vault.DormantSubjects(ctx, s.db.Pool, cutoff, after, batch)
		if err != nil {
			return nil, err
		}
		if len(page) == 0 {
			break
		}
		ids := make([]string, len(page))
		for i, d := range page {
			ids[i] = d.ID
		}
		named, err := namedByErasures(ctx, s.db.Pool, ids)
		if err != nil {
			return nil, err
		}
		for _, d := range page {
			if !named[d.ID] && len(out) < batch {
				// Audit pseudonyms are of the user key: the app and the sub.
				out = append(out, dormantCandidate{id: d.ID, externalID: d.UserKey})
			}
		}
		if len(page) < batch {
			break
		}
		after = &page[len(page)-1]
	}
	return out, nil
}

// namedByErasures returns which of the subjects (internal ids) an erasure
// request names.
func namedByErasures(ctx context.Context, q postgres.Querier, ids []string) (map[string]bool, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT erased_subject_id FROM erasure_requests WHERE erased_subject_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("compliance: dormant subjects: %w", postgres.Translate(err))
	}
	named, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("compliance: dormant subjects: %w", postgres.Translate(err))
	}
	out := make(map[string]bool, len(named))
	for _, id := range named {
		out[id] = true
	}
	return out, nil
}

// eraseIfDormant checks one candidate against the audit log and erases it.
func (s *Service) eraseIfDormant(ctx context.Context, c dormantCandidate, cutoff time.Time, dryRun bool, rep *DormantReport) error {
	pseudonym := s.auditor.Pseudonym(c.externalID)
	last, err := audit.LastActivity(ctx, s.db.Pool, pseudonym, cutoff)
	if err != nil {
		return err
	}
	if last != nil {
		rep.Active++
		if dryRun {
			return nil
		}
		return vault.SeenAt(ctx, s.db.Pool, c.id, *last)
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
		// The fence first, on the condition that they are still dormant:
		// the request is recorded only if it is set, in this transaction.
		fenced, err := vault.MarkErasingIfUnseen(ctx, tx, c.id, now, id, cutoff)
		if err != nil {
			return err
		}
		if !fenced {
			// Seen again, erased by another run, or already erasing.
			return kluis.Errorf(kluis.EConflict, "the subject is no longer dormant")
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO erasure_requests (id, erased_subject_id, subject_pseudonym, reason, status, requested_by, requested_at, approved_by, approved_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7)`,
			id, c.id, pseudonym, reason, ErasureApproved, dormantRequester, now, dormantApprover); err != nil {
			return fmt.Errorf("compliance: dormant erasure: %w", postgres.Translate(err))
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
