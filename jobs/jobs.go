// Package jobs runs kluis's scheduled jobs (retention purges, key rotation,
// expiry sweeps) on cron schedules, one instance at a time across every
// kluis instance sharing the database, and keeps a record of each run in
// job_runs and in the audit log.
//
// Leadership is per job and per run: a run first takes a session-level
// Postgres advisory lock on a connection it holds for the whole run, and a
// run that finds the lock taken is skipped. A session lock (not a
// transaction lock) because jobs run many transactions of their own, and a
// lock held by an open transaction spanning the whole job would keep a
// snapshot and a connection idle in transaction for minutes. The lock goes
// with the session, so an instance that dies mid-run frees the job at once;
// the run it left behind is marked abandoned by the next run.
//
// Each running job therefore holds one connection of the pool. Session
// advisory locks need a session-pooling path to Postgres: behind PgBouncer
// in transaction mode they do not hold.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres"
)

// Job is a task run on a schedule.
type Job struct {
	// Name identifies the job in `kluis jobs run NAME`, job_runs, the audit
	// log and the advisory-lock key: lower-case letters, digits, '.', '_'
	// and '-'.
	Name string
	// Schedule is a cron spec: five fields (minute to weekday), six with
	// seconds first, or a descriptor such as "@daily" or "@every 10m".
	// Schedules are read in UTC.
	Schedule string
	// Timeout bounds one run; zero means the scheduler's default.
	Timeout time.Duration
	// Run does the work. Its context ends at the run's timeout or when the
	// scheduler stops; rec collects counts that end up in job_runs.counts.
	// A returned error (or a panic) marks the run failed; only the error's
	// safe message (kluis.ErrorMessage) is stored.
	Run func(ctx context.Context, rec *Run) error
}

// Outcomes of a run, as stored in job_runs.outcome.
const (
	OutcomeRunning   = "running"
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"
)

// Errors of RunNow, matched with errors.Is. Both are wrapped in a
// kluis.Error whose message is safe to show.
var (
	// ErrUnknownJob: no job of that name is registered (kluis.ENotFound).
	ErrUnknownJob = errors.New("jobs: unknown job")
	// ErrAlreadyRunning: another run of the job holds its lock, on another
	// instance or this one (kluis.EConflict). Nothing was run or recorded.
	ErrAlreadyRunning = errors.New("jobs: job already running elsewhere")
	// ErrStopped: the scheduler is stopping and starts no more runs
	// (kluis.EUnavailable).
	ErrStopped = errors.New("jobs: scheduler stopped")
)

// Options tune a Scheduler; the zero value is usable.
type Options struct {
	// Instance names this process in job_runs; default hostname:pid.
	Instance string
	// Timeout bounds a run of a job that sets none; default one hour.
	Timeout time.Duration
	// StopTimeout bounds how long stopping waits for running jobs, whose
	// contexts are cancelled first; default 30 seconds.
	StopTimeout time.Duration
	// Clock stamps job_runs; default the system clock.
	Clock kluis.Clock
	// Metrics, when set, counts runs, skips, durations, last successes and
	// each run's counts (NewMetrics).
	Metrics *Metrics
}

// RunResult describes one run: what RunNow returns and what List shows of a
// job's last run.
type RunResult struct {
	ID       int64
	Job      string
	Instance string
	// StartedAt and FinishedAt are in UTC; FinishedAt is zero while the run
	// is still going.
	StartedAt  time.Time
	FinishedAt time.Time
	Outcome    string
	Counts     map[string]int64
	// Error is the safe message of a failed run's error.
	Error string
}

// JobInfo describes a registered job for `kluis jobs list` and the admin API.
type JobInfo struct {
	Name     string
	Schedule string
	// Next is when the schedule next fires, in UTC.
	Next time.Time
	// LastRun is the job's most recent run on any instance, or nil.
	LastRun *RunResult
}

// Scheduler runs registered jobs on their schedules and on demand.
type Scheduler struct {
	db          *postgres.DB
	auditor     *audit.Auditor
	log         *slog.Logger
	instance    string
	timeout     time.Duration
	stopTimeout time.Duration
	clock       kluis.Clock
	metrics     *Metrics

	mu       sync.Mutex
	jobs     map[string]*registered
	names    []string // in registration order
	started  bool
	stopping bool
	stopCtx  context.Context // Start's context, once started
	runs     sync.WaitGroup  // runs in progress; Add only under mu while !stopping
	done     chan struct{}
}

type registered struct {
	job      Job
	schedule cron.Schedule
}

// parser accepts five fields, six with seconds first, and descriptors.
var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// New returns a Scheduler recording runs in db and in the audit log.
func New(db *postgres.DB, auditor *audit.Auditor, logger *slog.Logger, opts Options) *Scheduler {
	if opts.Instance == "" {
		opts.Instance = defaultInstance()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Hour
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 30 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = kluis.SystemClock{}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Scheduler{
		db: db, auditor: auditor, log: logger.With("component", "jobs"),
		instance: opts.Instance, timeout: opts.Timeout, stopTimeout: opts.StopTimeout, clock: opts.Clock, metrics: opts.Metrics,
		jobs: map[string]*registered{}, done: make(chan struct{}),
	}
}

func defaultInstance() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}

// Register adds a job. Names are unique; the schedule must parse. Jobs are
// registered before Start.
func (s *Scheduler) Register(j Job) error {
	if !validName.MatchString(j.Name) {
		return kluis.Errorf(kluis.EInvalid, "jobs: job name %q is not lower-case letters, digits, '.', '_' or '-'", j.Name)
	}
	if j.Run == nil {
		return kluis.Errorf(kluis.EInvalid, "jobs: job %s has no Run function", j.Name)
	}
	sched, err := parser.Parse(j.Schedule)
	if err != nil {
		return kluis.Wrap(kluis.EInvalid, fmt.Sprintf("jobs: job %s: schedule %q does not parse", j.Name, j.Schedule), err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return kluis.Errorf(kluis.EConflict, "jobs: job %s registered after Start", j.Name)
	}
	if _, dup := s.jobs[j.Name]; dup {
		return kluis.Errorf(kluis.EConflict, "jobs: job %s is already registered", j.Name)
	}
	s.jobs[j.Name] = &registered{job: j, schedule: sched}
	s.names = append(s.names, j.Name)
	return nil
}

// Start runs the registered jobs on their schedules until ctx ends. It
// returns at once. When ctx ends the scheduler starts no more runs, the
// running jobs' contexts are cancelled (they derive from ctx), and Done is
// closed once they have finished, or after the stop timeout if some do not.
func (s *Scheduler) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return kluis.Errorf(kluis.EConflict, "jobs: scheduler already started")
	}
	s.started = true
	s.stopCtx = ctx
	c := cron.New(
		cron.WithLocation(time.UTC),
		cron.WithParser(parser),
		cron.WithLogger(cronLogger{s.log}),
		// Within one instance a run still going makes the next tick a no-op
		// without touching the database; across instances the lock does it.
		cron.WithChain(cron.SkipIfStillRunning(cronLogger{s.log})),
	)
	for _, name := range s.names {
		r := s.jobs[name]
		c.Schedule(r.schedule, cron.FuncJob(func() { s.scheduled(ctx, r.job) }))
	}
	c.Start()
	go s.stopWhenDone(ctx, c)
	return nil
}

// Done is closed when the scheduler has stopped after Start's context ended.
func (s *Scheduler) Done() <-chan struct{} { return s.done }

func (s *Scheduler) stopWhenDone(ctx context.Context, c *cron.Cron) {
	<-ctx.Done()
	c.Stop()
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	finished := make(chan struct{})
	go func() { s.runs.Wait(); close(finished) }()
	t := time.NewTimer(s.stopTimeout)
	defer t.Stop()
	select {
	case <-finished:
	case <-t.C:
		s.log.Warn("jobs still running at stop timeout; leaving them to the process's exit", "timeout", s.stopTimeout)
	}
	close(s.done)
}

// scheduled is one tick of a job's schedule.
func (s *Scheduler) scheduled(ctx context.Context, j Job) {
	res, err := s.run(ctx, j)
	switch {
	case errors.Is(err, ErrAlreadyRunning), errors.Is(err, ErrStopped):
		s.log.Debug("job run skipped", "job", j.Name, "reason", kluis.ErrorMessage(err))
	case err != nil:
		s.log.Error("job run failed", "job", j.Name, "run_id", res.ID, "err", err)
	default:
		s.log.Info("job run succeeded", "job", j.Name, "run_id", res.ID, "counts", res.Counts,
			"took", res.FinishedAt.Sub(res.StartedAt))
	}
}

// RunNow runs the named job once, now, in the caller's goroutine, under the
// same lock and with the same record as a scheduled run: `kluis jobs run
// NAME` calls it. It returns ErrUnknownJob, ErrAlreadyRunning or ErrStopped
// (wrapped) without running anything; a run that fails returns its result
// with a kluis.Error carrying the safe message.
func (s *Scheduler) RunNow(ctx context.Context, name string) (RunResult, error) {
	s.mu.Lock()
	r, ok := s.jobs[name]
	s.mu.Unlock()
	if !ok {
		return RunResult{}, kluis.Wrap(kluis.ENotFound, fmt.Sprintf("no job named %q", name), ErrUnknownJob)
	}
	return s.run(ctx, r.job)
}

// run counts the run in progress, so that stopping can wait for it, and
// records it in the metrics.
func (s *Scheduler) run(ctx context.Context, j Job) (RunResult, error) {
	res, err := s.runCounted(ctx, j)
	if res.Job == "" {
		res.Job = j.Name
	}
	s.metrics.observe(res, err)
	return res, err
}

func (s *Scheduler) runCounted(ctx context.Context, j Job) (RunResult, error) {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return RunResult{Job: j.Name}, kluis.Wrap(kluis.EUnavailable, "the job scheduler is stopping", ErrStopped)
	}
	s.runs.Add(1)
	stopCtx := s.stopCtx
	s.mu.Unlock()
	defer s.runs.Done()
	if stopCtx != nil {
		// A run started by RunNow on a running scheduler stops with it too.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(stopCtx, cancel)()
	}
	return s.execute(ctx, j)
}

// List describes every registered job, in registration order, with its next
// scheduled time and its last run.
func (s *Scheduler) List(ctx context.Context) ([]JobInfo, error) {
	s.mu.Lock()
	infos := make([]JobInfo, 0, len(s.names))
	now := s.clock.Now().UTC()
	for _, name := range s.names {
		r := s.jobs[name]
		infos = append(infos, JobInfo{Name: name, Schedule: r.job.Schedule, Next: r.schedule.Next(now).UTC()})
	}
	names := append([]string(nil), s.names...)
	s.mu.Unlock()
	last, err := lastRuns(ctx, s.db, names)
	if err != nil {
		return nil, err
	}
	for i := range infos {
		if r, ok := last[infos[i].Name]; ok {
			infos[i].LastRun = &r
		}
	}
	return infos, nil
}

// Run is the record of one run in progress, handed to the job so that it can
// count what it did. It is safe for concurrent use.
type Run struct {
	id  int64
	job string

	mu     sync.Mutex
	counts map[string]int64
	// checkpoint writes counts to the run's row; it uses the run's pinned
	// connection, hence the mutex.
	checkpoint func(ctx context.Context, counts map[string]int64) error
}

// ID is the run's job_runs id.
func (r *Run) ID() int64 { return r.id }

// Job is the name of the job being run.
func (r *Run) Job() string { return r.job }

// Add adds n to the count called name ("purged", "rewrapped").
func (r *Run) Add(name string, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[name] += n
}

// Set sets the count called name, for progress that is not a sum.
func (r *Run) Set(name string, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[name] = n
}

// Counts returns a copy of the counts so far.
func (r *Run) Counts() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.counts)
}

// Checkpoint writes the counts so far to the run's row, so that a long job's
// progress shows in `kluis jobs list` while it runs. The final counts are
// written at the end of the run whether or not the job checkpoints.
func (r *Run) Checkpoint(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.checkpoint(ctx, maps.Clone(r.counts))
}

// cronLogger sends robfig/cron's logging to slog: its Info is chatty
// (every wake-up), so it goes to Debug.
type cronLogger struct{ log *slog.Logger }

func (l cronLogger) Info(msg string, kv ...any) { l.log.Debug("cron: "+msg, kv...) }

func (l cronLogger) Error(err error, msg string, kv ...any) {
	l.log.Error("cron: "+msg, append(kv, "err", err)...)
}
