package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres"
)

// recordTimeout bounds the writes that close a run. They run on a context
// that is not cancelled with the job's, so that a run cut short by a
// timeout or a stop is still recorded.
const recordTimeout = 10 * time.Second

// auditAction is the audit log's action for a job run.
const auditAction = "job.run"

// lockKey derives a job's advisory-lock key from its name: FNV-1a over a
// namespace and the name, so that jobs never share a key with each other
// or, but for a 2^-64 chance, with kluis's other advisory locks.
func lockKey(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("kluis/jobs\x00")) // hash.Hash's Write never fails
	_, _ = h.Write([]byte(name))
	return int64(h.Sum64())
}

// execute is one run: lock, record the start, run, record the end, unlock.
func (s *Scheduler) execute(ctx context.Context, j Job) (RunResult, error) {
	conn, err := s.db.Pool.Acquire(ctx)
	if err != nil {
		return RunResult{Job: j.Name}, kluis.Unavailable("database", postgres.Translate(err))
	}
	key := lockKey(j.Name)
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&locked); err != nil {
		// The lock may have been taken before the error (a cancel racing
		// the reply): close the session rather than pool it with the lock.
		closeSession(ctx, conn)
		return RunResult{Job: j.Name}, kluis.Unavailable("database", postgres.Translate(err))
	}
	if !locked {
		conn.Release()
		return RunResult{Job: j.Name}, kluis.Wrap(kluis.EConflict,
			fmt.Sprintf("job %s is already running on another instance; try again when it has finished", j.Name), ErrAlreadyRunning)
	}
	defer s.unlock(ctx, conn, key)

	res, err := s.begin(ctx, conn, j.Name)
	if err != nil {
		// Fail closed: a run that cannot be recorded does not run.
		return res, err
	}
	rec := &Run{id: res.ID, job: j.Name, counts: map[string]int64{},
		checkpoint: func(ctx context.Context, counts map[string]int64) error {
			return checkpoint(ctx, conn, res.ID, counts)
		}}
	jobErr := s.call(ctx, j, rec)

	// The job is over: nothing else uses the pinned connection now.
	return s.finish(ctx, conn, res, rec.Counts(), jobErr)
}

// unlock releases the advisory lock and returns the connection to the pool.
// If the unlock cannot be confirmed the connection is closed instead, which
// ends the session and its locks: a pooled connection must never keep one.
func (s *Scheduler) unlock(ctx context.Context, conn *pgxpool.Conn, key int64) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	var released bool
	err := conn.QueryRow(uctx, `SELECT pg_advisory_unlock($1)`, key).Scan(&released)
	if err == nil && released {
		conn.Release()
		return
	}
	s.log.Warn("advisory unlock failed; closing the connection to drop the lock", "err", err, "released", released)
	closeSession(ctx, conn)
}

// closeSession takes conn out of the pool and closes it, ending its session
// and whatever advisory locks it holds.
func closeSession(ctx context.Context, conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	_ = conn.Hijack().Close(ctx)
}

// call runs the job under its timeout and turns a panic into an error.
func (s *Scheduler) call(ctx context.Context, j Job, rec *Run) (err error) {
	timeout := j.Timeout
	if timeout <= 0 {
		timeout = s.timeout
	}
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		if v := recover(); v != nil {
			// The stack goes to the (redacting) log only; the record says no
			// more than that it panicked.
			what := describePanic(v)
			s.log.Error("job panicked", "job", j.Name, "run_id", rec.ID(), "panic", what, "stack", string(debug.Stack()))
			err = kluis.Wrap(kluis.EInternal, "job panicked", errors.New("panic: "+what))
		}
	}()
	err = j.Run(runCtx, rec)
	if isContextError(err) && runCtx.Err() != nil {
		// Say why the context ended rather than "internal error".
		switch {
		case ctx.Err() != nil:
			err = kluis.Wrap(kluis.EUnavailable, "job cancelled: the scheduler stopped", err)
		case errors.Is(runCtx.Err(), context.DeadlineExceeded):
			err = kluis.Wrap(kluis.EUnavailable, fmt.Sprintf("job timed out after %s", timeout), err)
		}
	}
	return err
}

// describePanic says what a job panicked with without printing the value,
// which may hold data the log must not see: the runtime's own errors (index
// out of range, nil dereference) are safe to print, anything else is named
// by its type.
func describePanic(v any) string {
	if re, ok := v.(runtime.Error); ok {
		return re.Error()
	}
	return fmt.Sprintf("panic value of type %T", v)
}

// isContextError reports whether err is a bare context error, which
// ErrorMessage would turn into "internal error".
func isContextError(err error) bool {
	return kluis.ErrorCode(err) == kluis.EInternal &&
		(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}

// begin marks runs of this job left "running" by a dead instance as failed
// (holding the lock proves no one else is running it) and records the new
// run's start.
func (s *Scheduler) begin(ctx context.Context, conn *pgxpool.Conn, name string) (RunResult, error) {
	res := RunResult{Job: name, Instance: s.instance, StartedAt: s.clock.Now().UTC(), Outcome: OutcomeRunning, Counts: map[string]int64{}}
	err := inTx(ctx, conn, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			UPDATE job_runs SET outcome = 'failed', finished_at = $2, error = $3
			WHERE job = $1 AND outcome = 'running'
			RETURNING id`, name, res.StartedAt, abandonedMessage)
		if err != nil {
			return err
		}
		abandoned, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		for _, id := range abandoned {
			if err := s.auditor.Append(ctx, tx, runEntry(name, id, audit.OutcomeFailure, nil, map[string]any{"abandoned": true})); err != nil {
				return err
			}
		}
		return tx.QueryRow(ctx, `
			INSERT INTO job_runs (job, instance, started_at) VALUES ($1, $2, $3) RETURNING id`,
			name, s.instance, res.StartedAt).Scan(&res.ID)
	})
	if err != nil {
		return res, kluis.Unavailable("job record", err)
	}
	return res, nil
}

const abandonedMessage = "abandoned: the instance running it stopped before it finished"

// finish records the run's end and its audit entry in one transaction.
func (s *Scheduler) finish(ctx context.Context, conn *pgxpool.Conn, res RunResult, counts map[string]int64, jobErr error) (RunResult, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	res.FinishedAt = s.clock.Now().UTC()
	res.Counts = counts
	res.Outcome = OutcomeSucceeded
	auditOutcome := audit.OutcomeSuccess
	extra := map[string]any{"instance": s.instance}
	if jobErr != nil {
		res.Outcome = OutcomeFailed
		res.Error = kluis.ErrorMessage(jobErr)
		auditOutcome = audit.OutcomeFailure
		extra["error_code"] = kluis.ErrorCode(jobErr)
	}
	raw, err := json.Marshal(counts)
	if err != nil {
		return res, fmt.Errorf("jobs: encode counts: %w", err)
	}
	err = inTx(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			UPDATE job_runs SET finished_at = $2, outcome = $3, counts = $4, error = $5 WHERE id = $1`,
			res.ID, res.FinishedAt, res.Outcome, raw, res.Error); err != nil {
			return err
		}
		return s.auditor.Append(ctx, tx, runEntry(res.Job, res.ID, auditOutcome, counts, extra))
	})
	if err != nil {
		// The row stays "running" and the next run marks it abandoned.
		s.log.Error("recording the end of a job run failed", "job", res.Job, "run_id", res.ID, "err", err)
		return res, kluis.Unavailable("job record", err)
	}
	if jobErr != nil {
		return res, kluis.Wrap(kluis.ErrorCode(jobErr), fmt.Sprintf("job %s failed: %s", res.Job, res.Error), jobErr)
	}
	return res, nil
}

func runEntry(job string, id int64, outcome string, counts map[string]int64, extra map[string]any) audit.Entry {
	details := map[string]any{"run_id": id}
	if counts != nil {
		details["counts"] = counts
	}
	for k, v := range extra {
		details[k] = v
	}
	return audit.Entry{
		ActorKind: audit.ActorSystem,
		Actor:     job,
		Action:    auditAction,
		Outcome:   outcome,
		Details:   details,
	}
}

func checkpoint(ctx context.Context, conn *pgxpool.Conn, id int64, counts map[string]int64) error {
	raw, err := json.Marshal(counts)
	if err != nil {
		return fmt.Errorf("jobs: encode counts: %w", err)
	}
	if _, err := conn.Exec(ctx, `UPDATE job_runs SET counts = $2 WHERE id = $1 AND outcome = 'running'`, id, raw); err != nil {
		return postgres.Translate(err)
	}
	return nil
}

// inTx runs fn in a transaction on the pinned connection, so that recording
// a run never needs a second connection from the pool.
func inTx(ctx context.Context, conn *pgxpool.Conn, fn func(tx pgx.Tx) error) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return postgres.Translate(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := fn(tx); err != nil {
		return postgres.Translate(err)
	}
	return postgres.Translate(tx.Commit(ctx))
}

// lastRuns returns the most recent run of each named job.
func lastRuns(ctx context.Context, db *postgres.DB, names []string) (map[string]RunResult, error) {
	rows, err := db.Pool.Query(ctx, `
		SELECT DISTINCT ON (job) id, job, instance, started_at, finished_at, outcome, counts, error
		FROM job_runs WHERE job = ANY($1)
		ORDER BY job, started_at DESC, id DESC`, names)
	if err != nil {
		return nil, postgres.Translate(err)
	}
	out := map[string]RunResult{}
	for rows.Next() {
		var r RunResult
		var finished *time.Time
		if err := rows.Scan(&r.ID, &r.Job, &r.Instance, &r.StartedAt, &finished, &r.Outcome, &r.Counts, &r.Error); err != nil {
			rows.Close()
			return nil, postgres.Translate(err)
		}
		r.StartedAt = r.StartedAt.UTC()
		if finished != nil {
			r.FinishedAt = finished.UTC()
		}
		out[r.Job] = r
	}
	if err := rows.Err(); err != nil {
		return nil, postgres.Translate(err)
	}
	return out, nil
}
