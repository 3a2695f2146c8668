package audit

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/postgres"
)

// PurgeBatch purges one batch of the oldest audit entries in tx: the
// audit_purge function (SECURITY DEFINER, 00008_audit_append_only.sql)
// decides what may go (links older than period, never under MinRetention,
// up to the first that is younger or names a held subject), writes the
// checkpoint with the count and deletes links and entries; the serving role
// can delete neither itself. It returns how many entries went and the chain
// positions of the first and last (zero when none went). The caller writes
// the audit entry saying so in the same transaction.
func PurgeBatch(ctx context.Context, tx pgx.Tx, period time.Duration, batch int) (n, fromPos, toPos int64, err error) {
	var from, to *int64
	err = tx.QueryRow(ctx, `SELECT entries, from_pos, to_pos FROM public.audit_purge(make_interval(secs => $1), $2)`,
		period.Seconds(), batch).Scan(&n, &from, &to)
	if err != nil || n == 0 {
		return 0, 0, 0, err
	}
	return n, *from, *to, nil
}

// Purgeable counts the chain links a purge with this cutoff would delete:
// those before the first link whose entry is younger than the cutoff, or
// names one of the held pseudonyms (as subject or acting user). The chain
// can only lose its head, so everything after that link stays too.
func Purgeable(ctx context.Context, q postgres.Querier, cutoff time.Time, held []string) (int64, error) {
	if held == nil {
		held = []string{}
	}
	var n int64
	err := q.QueryRow(ctx, `
		WITH stop AS (
			SELECT coalesce(min(c.pos), 0) AS stop_pos FROM audit_chain c JOIN audit_entries e ON e.seq = c.entry_seq
			WHERE e.occurred_at >= $1
			   OR e.subject_pseudonym = ANY($2)
			   OR (e.actor_kind = 'user' AND e.actor = ANY($2)))
		SELECT count(*) FROM audit_chain c, stop WHERE stop.stop_pos = 0 OR c.pos < stop.stop_pos`, cutoff, held).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("audit: purgeable: %w", postgres.Translate(err))
	}
	return n, nil
}
