package main

import (
	"context"
	"errors"
	"time"

	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/jobs"
)

// openCompliance builds the compliance service, with bank linking's
// provider revocation: access is withdrawn at the bank before the
// subject's keys are shredded.
func (a *app) openCompliance(context.Context) error {
	svc := compliance.NewService(a.db, a.auditor, a.ring, nil)
	svc.SetRevokeAttempts(a.cfg.ErasureRevokeAttempts)
	svc.SetSealedOpener(a.store)
	svc.AddRevoker(a.bank)
	a.comp = svc
	return nil
}

// registerComplianceJobs adds the retention purge, the erasure resumer and
// the publication of the audit chain's signed head.
func (a *app) registerComplianceJobs(s *jobs.Scheduler) error {
	if err := s.Register(jobs.Job{
		Name: "audit-head", Schedule: "@every " + a.cfg.AuditHeadInterval.String(), Timeout: 5 * time.Minute,
		Run: a.publishHead,
	}); err != nil {
		return err
	}
	purger := compliance.NewPurger(a.db, a.auditor, nil, a.cfg.Retention, a.cfg.RetentionClasses)
	opts := compliance.PurgeOptions{DryRun: a.cfg.RetentionDryRun, Batch: a.cfg.RetentionBatch, Pause: a.cfg.RetentionBatchPause}
	if err := s.Register(jobs.Job{
		Name: "retention-purge", Schedule: "37 2 * * *", Timeout: 6 * time.Hour,
		Run: func(ctx context.Context, run *jobs.Run) error { return a.purge(ctx, run, purger, opts) },
	}); err != nil {
		return err
	}
	return s.Register(jobs.Job{
		Name: "erasure-resume", Schedule: "*/15 * * * *", Timeout: time.Hour,
		Run: func(ctx context.Context, run *jobs.Run) error {
			n, err := a.comp.ResumeErasures(ctx)
			run.Set("completed", int64(n))
			return err
		},
	})
}

// publishHead publishes the audit chain's signed head as an audit.head event
// and a log line, for keeping outside the database (docs/DEPLOYMENT.md). A
// chain that no longer extends the head published before fails the run,
// loudly, and publishes nothing.
func (a *app) publishHead(ctx context.Context, run *jobs.Run) error {
	h, err := audit.PublishHead(ctx, a.db, a.sys)
	if err != nil {
		if errors.Is(err, audit.ErrHeadNotExtended) {
			a.log.Error("audit chain rewritten: it does not extend the head published before", "cause", err.Error())
		}
		return err
	}
	run.Set("pos", h.Pos)
	a.log.Info("audit chain head", "pos", h.Pos, "hash", h.Hash, "at", h.At.Format(time.RFC3339Nano), "sig", h.Sig)
	return nil
}

// purge runs the retention purge, counting per class in job_runs as it goes
// ("purged_<class>", or "would_purge_<class>" in a dry run) and noting the
// classes skipped ("skipped_<class>" = 1) because their table is not there.
func (a *app) purge(ctx context.Context, run *jobs.Run, purger *compliance.Purger, opts compliance.PurgeOptions) error {
	prefix := "purged_"
	if opts.DryRun {
		prefix = "would_purge_"
	}
	opts.Progress = func(class string, n int64) {
		run.Set(prefix+class, n)
		_ = run.Checkpoint(ctx) // progress only: the run's end records the totals
	}
	rep, err := purger.Purge(ctx, opts)
	for _, cr := range rep.Classes {
		if cr.Skipped != "" {
			run.Set("skipped_"+cr.Class, 1)
			a.log.Info("retention class skipped", "class", cr.Class, "note", cr.Skipped)
			continue
		}
		run.Set(prefix+cr.Class, cr.Deleted)
	}
	if err != nil || a.cfg.DormantSubjects == 0 {
		return err
	}
	return a.eraseDormant(ctx, run, prefix, opts.DryRun)
}

// eraseDormant erases the subjects unseen for KLUIS_RETENTION_DORMANT_SUBJECTS
// through the erasure pipeline (compliance.EraseDormant), counting in the
// run the subjects erased, still running, kept under a hold, and found active.
func (a *app) eraseDormant(ctx context.Context, run *jobs.Run, prefix string, dry bool) error {
	rep, err := a.comp.EraseDormant(ctx, a.cfg.DormantSubjects, 0, dry)
	run.Set(prefix+compliance.DormantClass, rep.Erased)
	run.Set("dormant_erasures_running", rep.Started)
	run.Set("dormant_held", rep.Held)
	run.Set("dormant_seen_again", rep.Active)
	return err
}
