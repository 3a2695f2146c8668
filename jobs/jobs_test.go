package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/audit/audittest"
	"github.com/kluis-dev/kluis/jobs"
	"github.com/kluis-dev/kluis/logging"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

func newScheduler(t *testing.T, db *postgres.DB, instance string, js ...jobs.Job) *jobs.Scheduler {
	t.Helper()
	s := jobs.New(db, audit.NewAuditor(db, audittest.Pseudonyms{}, nil), logging.New(io.Discard, 0),
		jobs.Options{Instance: instance, StopTimeout: 5 * time.Second})
	for _, j := range js {
		if err := s.Register(j); err != nil {
			t.Fatalf("register %s: %v", j.Name, err)
		}
	}
	return s
}

type runRow struct {
	job, instance, outcome, errMsg string
	finished                       bool
	counts                         map[string]int64
}

func readRun(t *testing.T, db *postgres.DB, id int64) runRow {
	t.Helper()
	var r runRow
	err := db.Pool.QueryRow(context.Background(), `
		SELECT job, instance, outcome, error, finished_at IS NOT NULL, counts FROM job_runs WHERE id = $1`, id).
		Scan(&r.job, &r.instance, &r.outcome, &r.errMsg, &r.finished, &r.counts)
	if err != nil {
		t.Fatalf("read run %d: %v", id, err)
	}
	return r
}

type auditRow struct {
	actorKind, actor, outcome string
	counts                    map[string]int64
}

// readAudit returns the job.run audit entries of run id.
func readAudit(t *testing.T, db *postgres.DB, id int64) []auditRow {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `
		SELECT actor_kind, actor, outcome, COALESCE(details->'counts', '{}'::jsonb) FROM audit_entries
		WHERE action = 'job.run' AND (details->>'run_id')::bigint = $1 ORDER BY seq`, id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var a auditRow
		if err := rows.Scan(&a.actorKind, &a.actor, &a.outcome, &a.counts); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func TestRunNowRecordsASucceededRunWithCountsAndAnAuditEntry(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.Open(t)
	s := newScheduler(t, db, "host-a:1", jobs.Job{Name: "purge", Schedule: "@daily", Run: func(ctx context.Context, rec *jobs.Run) error {
		rec.Add("purged", 3)
		rec.Add("purged", 4)
		rec.Set("batches", 2)
		return nil
	}})

	res, err := s.RunNow(context.Background(), "purge")
	if err != nil {
		t.Fatalf("RunNow: %v", err)
	}
	if res.Outcome != jobs.OutcomeSucceeded || res.Counts["purged"] != 7 || res.FinishedAt.IsZero() || res.ID == 0 {
		t.Errorf("result = %+v, want succeeded with purged=7", res)
	}
	row := readRun(t, db, res.ID)
	want := runRow{job: "purge", instance: "host-a:1", outcome: "succeeded", finished: true, counts: map[string]int64{"purged": 7, "batches": 2}}
	if fmt.Sprint(row) != fmt.Sprint(want) {
		t.Errorf("job_runs row = %+v, want %+v", row, want)
	}
	audits := readAudit(t, db, res.ID)
	if len(audits) != 1 || audits[0].actorKind != audit.ActorSystem || audits[0].actor != "purge" ||
		audits[0].outcome != audit.OutcomeSuccess || audits[0].counts["purged"] != 7 {
		t.Errorf("audit entries = %+v, want one system success by purge with purged=7", audits)
	}
}

func TestFailedRunsAreRecordedWithASafeMessage(t *testing.T) {
	t.Parallel()
	const canary = "password=hunter2 for user bob"
	tests := []struct {
		name    string
		timeout time.Duration
		run     func(context.Context, *jobs.Run) error
		wantMsg string
	}{
		{"a raw driver error is stored as internal error", 0, func(context.Context, *jobs.Run) error {
			return fmt.Errorf("purge: %w", errors.New("FATAL: "+canary))
		}, "internal error"},
		{"a kluis error keeps its safe message", 0, func(context.Context, *jobs.Run) error {
			return kluis.Wrap(kluis.EUnavailable, "key provider unavailable, try again later", errors.New(canary))
		}, "key provider unavailable, try again later"},
		{"a panic is recovered and recorded as failed", 0, func(_ context.Context, rec *jobs.Run) error {
			rec.Add("before_panic", 1)
			panic(canary)
		}, "job panicked"},
		{"a run past its timeout is recorded as timed out", time.Millisecond, func(ctx context.Context, _ *jobs.Run) error {
			<-ctx.Done()
			return ctx.Err()
		}, "job timed out after 1ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db, _ := pgtest.Open(t)
			s := newScheduler(t, db, "host-a:1", jobs.Job{Name: "flaky", Schedule: "@hourly", Timeout: tt.timeout, Run: tt.run})

			res, err := s.RunNow(context.Background(), "flaky")
			if err == nil {
				t.Fatal("RunNow succeeded, want the job's failure")
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("RunNow error %q leaks the cause", err)
			}
			if res.Outcome != jobs.OutcomeFailed || res.Error != tt.wantMsg {
				t.Errorf("result = %+v, want failed with %q", res, tt.wantMsg)
			}
			row := readRun(t, db, res.ID)
			if row.outcome != "failed" || row.errMsg != tt.wantMsg || !row.finished {
				t.Errorf("job_runs row = %+v, want failed and finished with %q", row, tt.wantMsg)
			}
			if audits := readAudit(t, db, res.ID); len(audits) != 1 || audits[0].outcome != audit.OutcomeFailure {
				t.Errorf("audit entries = %+v, want one failure", audits)
			}
			// The lock was released: the job can run again.
			if res2, _ := s.RunNow(context.Background(), "flaky"); res2.ID == 0 || res2.ID == res.ID {
				t.Errorf("second run = %+v, want a new run", res2)
			}
		})
	}
}

func TestAJobNeverRunsConcurrentlyAcrossInstances(t *testing.T) {
	t.Parallel()
	db1, url := pgtest.Open(t)
	db2, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db2.Close)

	const goroutines = 12
	var active, maxActive, bodies atomic.Int64
	var losers atomic.Int64
	job := jobs.Job{Name: "rotate-keys", Schedule: "@hourly", Run: func(ctx context.Context, rec *jobs.Run) error {
		n := active.Add(1)
		defer active.Add(-1)
		for m := maxActive.Load(); n > m && !maxActive.CompareAndSwap(m, n); m = maxActive.Load() {
		}
		bodies.Add(1)
		// Hold the job until every other goroutine has been turned away
		// (or a generous bound passes), so the race is real, not lucky.
		deadline := time.Now().Add(10 * time.Second)
		for losers.Load() < goroutines-1 && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		rec.Add("rewrapped", 1)
		return nil
	}}
	schedulers := []*jobs.Scheduler{newScheduler(t, db1, "host-a:1", job), newScheduler(t, db2, "host-b:2", job)}

	var wg sync.WaitGroup
	var winners atomic.Int64
	errs := make(chan error, goroutines)
	start := make(chan struct{})
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := schedulers[g%2].RunNow(context.Background(), "rotate-keys")
			switch {
			case err == nil:
				winners.Add(1)
			case errors.Is(err, jobs.ErrAlreadyRunning):
				losers.Add(1)
				if kluis.ErrorCode(err) != kluis.EConflict || !strings.Contains(err.Error(), "already running on another instance") {
					errs <- fmt.Errorf("loser told %q, want a conflict saying it runs elsewhere", err)
				}
			default:
				errs <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if maxActive.Load() != 1 {
		t.Errorf("at most %d bodies ran at once, want 1", maxActive.Load())
	}
	if winners.Load() != 1 || losers.Load() != goroutines-1 || bodies.Load() != 1 {
		t.Errorf("winners %d, losers %d, bodies %d; want 1, %d, 1", winners.Load(), losers.Load(), bodies.Load(), goroutines-1)
	}
	var rows int
	if err := db1.Pool.QueryRow(context.Background(), `SELECT count(*) FROM job_runs`).Scan(&rows); err != nil || rows != 1 {
		t.Errorf("job_runs holds %d rows (%v), want 1: losers are not recorded", rows, err)
	}
}

func TestRepeatedRacingRunsNeverOverlap(t *testing.T) {
	t.Parallel()
	db1, url := pgtest.Open(t)
	db2, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db2.Close)
	var active, overlaps atomic.Int64
	job := jobs.Job{Name: "sweep", Schedule: "@hourly", Run: func(context.Context, *jobs.Run) error {
		if active.Add(1) > 1 {
			overlaps.Add(1)
		}
		defer active.Add(-1)
		time.Sleep(2 * time.Millisecond) // widen the window; nothing asserts on time
		return nil
	}}
	schedulers := []*jobs.Scheduler{newScheduler(t, db1, "host-a:1", job), newScheduler(t, db2, "host-b:2", job)}
	var wg sync.WaitGroup
	var succeeded atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 15 {
				_, err := schedulers[g%2].RunNow(context.Background(), "sweep")
				if err == nil {
					succeeded.Add(1)
				} else if !errors.Is(err, jobs.ErrAlreadyRunning) {
					t.Errorf("RunNow: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	if overlaps.Load() != 0 {
		t.Errorf("%d runs overlapped another, want none", overlaps.Load())
	}
	var rows int64
	if err := db1.Pool.QueryRow(context.Background(), `SELECT count(*) FROM job_runs WHERE outcome = 'succeeded'`).Scan(&rows); err != nil || rows != succeeded.Load() {
		t.Errorf("job_runs holds %d succeeded rows (%v), want %d", rows, err, succeeded.Load())
	}
}

func TestListShowsScheduleNextRunAndLastRun(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.Open(t)
	fail := true
	s := newScheduler(t, db, "host-a:1",
		jobs.Job{Name: "retention", Schedule: "0 3 * * *", Run: func(_ context.Context, rec *jobs.Run) error {
			if fail {
				return kluis.Errorf(kluis.EUnavailable, "database unavailable, try again later")
			}
			rec.Add("purged", 5)
			return nil
		}},
		jobs.Job{Name: "never-run", Schedule: "*/30 * * * * *", Run: func(context.Context, *jobs.Run) error { return nil }},
	)
	ctx := context.Background()
	if _, err := s.RunNow(ctx, "retention"); err == nil {
		t.Fatal("first run succeeded, want it to fail")
	}
	fail = false
	second, err := s.RunNow(ctx, "retention")
	if err != nil {
		t.Fatal(err)
	}

	before := time.Now().UTC()
	infos, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[0].Name != "retention" || infos[1].Name != "never-run" {
		t.Fatalf("List = %+v, want retention then never-run", infos)
	}
	ret, never := infos[0], infos[1]
	if ret.Schedule != "0 3 * * *" || ret.Next.Hour() != 3 || ret.Next.Minute() != 0 || !ret.Next.After(before.Add(-time.Second)) {
		t.Errorf("retention next = %v (schedule %q), want the next 03:00 UTC", ret.Next, ret.Schedule)
	}
	last := ret.LastRun
	if last == nil || last.ID != second.ID || last.Outcome != jobs.OutcomeSucceeded || last.Counts["purged"] != 5 ||
		last.Instance != "host-a:1" || last.FinishedAt.Before(last.StartedAt) || last.Error != "" {
		t.Errorf("retention last run = %+v, want the second, succeeded run with purged=5", last)
	}
	if never.LastRun != nil || never.Next.Second()%30 != 0 {
		t.Errorf("never-run = %+v, want no last run and a next run on a 30-second mark", never)
	}
}

func TestRunNowOfAnUnknownJobIsNotFound(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.Open(t)
	s := newScheduler(t, db, "host-a:1")
	_, err := s.RunNow(context.Background(), "no-such-job")
	if !errors.Is(err, jobs.ErrUnknownJob) || kluis.ErrorCode(err) != kluis.ENotFound || !strings.Contains(kluis.ErrorMessage(err), "no-such-job") {
		t.Errorf("RunNow(unknown) = %v, want not found naming the job", err)
	}
}

func TestRegisterValidatesJobs(t *testing.T) {
	t.Parallel()
	noop := func(context.Context, *jobs.Run) error { return nil }
	tests := []struct {
		name    string
		job     jobs.Job
		wantErr bool
	}{
		{"a standard five-field spec is accepted", jobs.Job{Name: "five", Schedule: "*/5 * * * *", Run: noop}, false},
		{"a six-field spec with seconds is accepted", jobs.Job{Name: "six", Schedule: "30 */5 * * * *", Run: noop}, false},
		{"a descriptor is accepted", jobs.Job{Name: "every", Schedule: "@every 10m", Run: noop}, false},
		{"a duplicate name is refused", jobs.Job{Name: "five", Schedule: "@daily", Run: noop}, true},
		{"a spec that does not parse is refused", jobs.Job{Name: "bad-spec", Schedule: "every tuesday", Run: noop}, true},
		{"an empty name is refused", jobs.Job{Name: "", Schedule: "@daily", Run: noop}, true},
		{"a name with spaces is refused", jobs.Job{Name: "purge all", Schedule: "@daily", Run: noop}, true},
		{"a job without a function is refused", jobs.Job{Name: "nil-run", Schedule: "@daily"}, true},
	}
	s := jobs.New(nil, nil, nil, jobs.Options{})
	for _, tt := range tests { // in order: the duplicate needs the first
		err := s.Register(tt.job)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: Register = %v, want error %v", tt.name, err, tt.wantErr)
		}
	}
}

func TestCheckpointShowsProgressWhileRunning(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.Open(t)
	var mid map[string]int64
	s := newScheduler(t, db, "host-a:1", jobs.Job{Name: "rewrap", Schedule: "@daily", Run: func(ctx context.Context, rec *jobs.Run) error {
		rec.Add("rewrapped", 100)
		if err := rec.Checkpoint(ctx); err != nil {
			return err
		}
		mid = readRun(t, db, rec.ID()).counts
		rec.Add("rewrapped", 50)
		return nil
	}})
	res, err := s.RunNow(context.Background(), "rewrap")
	if err != nil {
		t.Fatal(err)
	}
	if mid["rewrapped"] != 100 || res.Counts["rewrapped"] != 150 || readRun(t, db, res.ID).counts["rewrapped"] != 150 {
		t.Errorf("counts mid-run %v, at the end %v; want 100 then 150", mid, res.Counts)
	}
}

func TestARunLeftRunningByADeadInstanceIsMarkedAbandoned(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	var stale int64
	if err := db.Pool.QueryRow(ctx, `
		INSERT INTO job_runs (job, instance, started_at) VALUES ('purge', 'dead-host:9', now() - interval '1 hour')
		RETURNING id`).Scan(&stale); err != nil {
		t.Fatal(err)
	}
	s := newScheduler(t, db, "host-a:1", jobs.Job{Name: "purge", Schedule: "@daily", Run: func(context.Context, *jobs.Run) error { return nil }})
	if _, err := s.RunNow(ctx, "purge"); err != nil {
		t.Fatal(err)
	}
	row := readRun(t, db, stale)
	if row.outcome != "failed" || !row.finished || !strings.HasPrefix(row.errMsg, "abandoned") {
		t.Errorf("stale run = %+v, want failed as abandoned", row)
	}
	if audits := readAudit(t, db, stale); len(audits) != 1 || audits[0].outcome != audit.OutcomeFailure {
		t.Errorf("stale run audit entries = %+v, want one failure", audits)
	}
}

func TestStoppingCancelsRunningJobsAndWaitsForTheirRecord(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.Open(t)
	started := make(chan int64, 1)
	s := newScheduler(t, db, "host-a:1", jobs.Job{Name: "tick", Schedule: "* * * * * *", Run: func(ctx context.Context, rec *jobs.Run) error {
		select {
		case started <- rec.ID():
		default:
		}
		<-ctx.Done()
		return ctx.Err()
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err == nil {
		t.Error("a second Start succeeded, want an error")
	}
	var id int64
	select {
	case id = <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the every-second job never started")
	}
	cancel()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the scheduler did not stop")
	}
	row := readRun(t, db, id)
	if row.outcome != "failed" || row.errMsg != "job cancelled: the scheduler stopped" {
		t.Errorf("run cut short by the stop = %+v, want failed as cancelled", row)
	}
	if _, err := s.RunNow(context.Background(), "tick"); !errors.Is(err, jobs.ErrStopped) {
		t.Errorf("RunNow after stop = %v, want ErrStopped", err)
	}
}

func TestAPanicIsLoggedWithItsStackButNotItsValue(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.Open(t)
	var buf syncBuffer
	s := jobs.New(db, audit.NewAuditor(db, audittest.Pseudonyms{}, nil), logging.New(&buf, 0), jobs.Options{})
	if err := s.Register(jobs.Job{Name: "boom", Schedule: "@daily", Run: func(context.Context, *jobs.Run) error {
		panic("token hunter2 for bob")
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RunNow(context.Background(), "boom"); err == nil {
		t.Fatal("RunNow succeeded, want the panic as a failure")
	}
	out := buf.String()
	if !strings.Contains(out, "job panicked") || !strings.Contains(out, "jobs_test.go") || strings.Contains(out, "hunter2") {
		t.Errorf("log = %s\nwant the panic and its stack without the panic value", out)
	}
}

// syncBuffer is a bytes.Buffer safe for the scheduler's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestARunNowOnAStartedSchedulerStopsWithIt(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.Open(t)
	started := make(chan struct{})
	s := newScheduler(t, db, "host-a:1", jobs.Job{Name: "long", Schedule: "@yearly", Run: func(ctx context.Context, _ *jobs.Run) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	type result struct {
		res jobs.RunResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := s.RunNow(context.Background(), "long")
		done <- result{res, err}
	}()
	<-started
	cancel()
	r := <-done
	if r.err == nil || r.res.Error != "job cancelled: the scheduler stopped" {
		t.Errorf("RunNow = %+v, %v; want the run cancelled by the stop", r.res, r.err)
	}
	<-s.Done()
}
