package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/postgres"
)

// SubjectEntry is one audit entry about a subject (by their pseudonym) or
// made by them as a user: what compliance's access report and export show.
type SubjectEntry struct {
	Seq        int64
	OccurredAt time.Time
	ActorKind  string
	Actor      string
	Action     string
	Target     string
	Outcome    string
	// Details is the entry's details as stored (a JSON object).
	Details json.RawMessage
}

// SubjectEntriesBefore returns up to limit entries about the subject whose
// pseudonym is pseudonym, or made by them as a user, with a position below
// before, newest first. Each side walks its own index.
func SubjectEntriesBefore(ctx context.Context, q postgres.Querier, pseudonym string, before int64, limit int) ([]SubjectEntry, error) {
	rows, err := q.Query(ctx, `
		SELECT seq, occurred_at, actor_kind, actor, action, target, outcome, details::text
		FROM (
			(SELECT * FROM audit_entries WHERE subject_pseudonym = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3)
			UNION
			(SELECT * FROM audit_entries WHERE actor_kind = 'user' AND actor = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3)
		) e
		ORDER BY seq DESC LIMIT $3`, pseudonym, before, limit)
	if err != nil {
		return nil, fmt.Errorf("audit: subject's entries: %w", postgres.Translate(err))
	}
	return collectSubjectEntries(rows)
}

// SubjectEntriesOldest returns up to limit entries about the subject whose
// pseudonym is pseudonym, or made by them as a user, oldest first.
func SubjectEntriesOldest(ctx context.Context, q postgres.Querier, pseudonym string, limit int) ([]SubjectEntry, error) {
	rows, err := q.Query(ctx, `
		SELECT seq, occurred_at, actor_kind, actor, action, target, outcome, details::text
		FROM audit_entries
		WHERE subject_pseudonym = $1 OR (actor_kind = 'user' AND actor = $1)
		ORDER BY seq LIMIT $2`, pseudonym, limit)
	if err != nil {
		return nil, fmt.Errorf("audit: subject's entries: %w", postgres.Translate(err))
	}
	return collectSubjectEntries(rows)
}

func collectSubjectEntries(rows pgx.Rows) ([]SubjectEntry, error) {
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SubjectEntry, error) {
		var e SubjectEntry
		var details string
		err := r.Scan(&e.Seq, &e.OccurredAt, &e.ActorKind, &e.Actor, &e.Action, &e.Target, &e.Outcome, &details)
		e.Details = json.RawMessage(details)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("audit: subject's entries: %w", postgres.Translate(err))
	}
	return out, nil
}

// LastActivity answers the time of the newest entry since since made by
// the user whose pseudonym is pseudonym, or by a service about them (a
// reveal), or nil. Staff looking at a person, providers' notices and
// kluis's own jobs do not count. The log is indexed by subject pseudonym
// and by user actor.
func LastActivity(ctx context.Context, q postgres.Querier, pseudonym string, since time.Time) (*time.Time, error) {
	var last *time.Time
	err := q.QueryRow(ctx, `
		SELECT max(occurred_at) FROM (
			SELECT occurred_at FROM audit_entries
			WHERE subject_pseudonym = $1 AND occurred_at >= $2 AND actor_kind IN ('user', 'service')
			UNION ALL
			SELECT occurred_at FROM audit_entries
			WHERE actor_kind = 'user' AND actor = $1 AND occurred_at >= $2
		) AS a`, pseudonym, since).Scan(&last)
	if err != nil {
		return nil, fmt.Errorf("audit: last activity: %w", postgres.Translate(err))
	}
	return last, nil
}
