package jobs_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/audit/audittest"
	"github.com/kluis-dev/kluis/jobs"
	"github.com/kluis-dev/kluis/logging"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// Every run shows in the metrics: its outcome, its duration, the time of
// the last success, its counts per name; a run turned away because the job
// is already running counts as skipped.
func TestJobRunsShowInTheMetrics(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.Open(t)
	reg := prometheus.NewRegistry()
	fail := false
	release := make(chan struct{})
	running := make(chan struct{}, 1)
	s := jobs.New(db, audit.NewAuditor(db, audittest.Pseudonyms{}, nil), logging.New(io.Discard, 0),
		jobs.Options{Instance: "host-a:1", Metrics: jobs.NewMetrics(reg)})
	for _, j := range []jobs.Job{
		{Name: "retention-purge", Schedule: "@daily", Run: func(ctx context.Context, rec *jobs.Run) error {
			if fail {
				return errors.New("boom")
			}
			rec.Set("purged_link_sessions", 3)
			rec.Set("purged_job_runs", 1)
			return nil
		}},
		{Name: "slow", Schedule: "@daily", Run: func(ctx context.Context, rec *jobs.Run) error {
			running <- struct{}{}
			<-release
			return nil
		}},
	} {
		if err := s.Register(j); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if _, err := s.RunNow(ctx, "retention-purge"); err != nil {
		t.Fatal(err)
	}
	fail = true
	if _, err := s.RunNow(ctx, "retention-purge"); err == nil {
		t.Fatal("the failing run succeeded")
	}
	done := make(chan error)
	go func() { _, err := s.RunNow(ctx, "slow"); done <- err }()
	<-running
	if _, err := s.RunNow(ctx, "slow"); !errors.Is(err, jobs.ErrAlreadyRunning) {
		t.Fatalf("second run = %v, want already running", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	want := `
# HELP kluis_job_runs_total Job runs by job and outcome (succeeded, failed, or skipped: a scheduled tick that found the job already running or the scheduler stopping).
# TYPE kluis_job_runs_total counter
kluis_job_runs_total{job="retention-purge",outcome="failed"} 1
kluis_job_runs_total{job="retention-purge",outcome="succeeded"} 1
kluis_job_runs_total{job="slow",outcome="skipped"} 1
kluis_job_runs_total{job="slow",outcome="succeeded"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kluis_job_runs_total"); err != nil {
		t.Error(err)
	}
	// The failed run set no counts: the last run's counts are zero now.
	wantCounts := `
# HELP kluis_job_last_run_count The counts of the job's last run (rows purged per retention class, keys rewrapped, erasures completed, ...), by job and count name.
# TYPE kluis_job_last_run_count gauge
kluis_job_last_run_count{count="purged_job_runs",job="retention-purge"} 0
kluis_job_last_run_count{count="purged_link_sessions",job="retention-purge"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(wantCounts), "kluis_job_last_run_count"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "kluis_job_run_duration_seconds"); n != 2 {
		t.Errorf("%d duration series, want 2", n)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "kluis_job_last_success_timestamp_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			if at := time.Unix(int64(m.GetGauge().GetValue()), 0); time.Since(at) > time.Minute {
				t.Errorf("last success of %v at %v", m.GetLabel(), at)
			}
		}
		return
	}
	t.Error("no last-success gauge")
}
