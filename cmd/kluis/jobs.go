package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/jobs"
	"github.com/kluis-dev/kluis/vault"
)

// scheduler builds the scheduler with every job kluis runs.
func (a *app) scheduler() (*jobs.Scheduler, error) {
	var opts jobs.Options
	if a.registry != nil {
		opts.Metrics = jobs.NewMetrics(a.registry)
	}
	s := jobs.New(a.db, a.auditor, a.log, opts)
	base := []jobs.Job{
		{
			Name: "key-rotation", Schedule: "17 3 * * *", Timeout: 6 * time.Hour,
			Run: a.rotateKeys,
		},
		{
			Name: "audit-verify", Schedule: "41 * * * *", Timeout: time.Hour,
			Run: a.verifyAuditJob,
		},
	}
	for _, j := range base {
		if err := s.Register(j); err != nil {
			return nil, err
		}
	}
	for _, register := range []func(*jobs.Scheduler) error{
		a.registerBankJobs, a.registerComplianceJobs, a.registerVerificationJobs, a.registerBankVerificationJob,
		a.registerStitchKeepAlive,
	} {
		if err := register(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// rotateKeys runs key rotation (vault.Store.Rotate): the keyring and system
// keys rewrapped under the root key's newest version, a new keyring epoch
// when one is due (or asked for by `kluis keys rotate --new-epoch`), subject
// keys re-wrapped under it locally, and subjects past their cryptoperiod or
// with version-1 records re-sealed (their owners checked against bank
// linking's pointers). It checkpoints its counts in job_runs, shows its
// progress in /metrics and, under `kluis keys rotate`, prints it.
func (a *app) rotateKeys(ctx context.Context, run *jobs.Run) error {
	progress := newRotationProgress(a.rotationOut)
	res, err := a.store.Rotate(ctx, a.db, vault.RotationOptions{
		Cryptoperiod:        a.cfg.KeyCryptoperiod,
		KeyringCryptoperiod: a.cfg.KeyringCryptoperiod,
		NewEpoch:            a.newEpoch,
		Batch:               a.cfg.KeyRotationBatch,
		Owners:              a.bank,
		Report: func(r vault.RotationResult) {
			a.rotation.Observe(r)
			progress.print(r)
			setRotationCounts(run, r)
			_ = run.Checkpoint(ctx) // progress only: the run's end records the totals
		},
	})
	setRotationCounts(run, res)
	res.Step = vault.StepDone // the run is over, whatever its outcome
	a.rotation.Observe(res)
	return err
}

// setRotationCounts puts a rotation's counts in its job_runs record.
func setRotationCounts(run *jobs.Run, r vault.RotationResult) {
	run.Set("rewrapped_keys", int64(r.RootRewrapped+r.Rewrapped))
	run.Set("root_rewrapped_keys", int64(r.RootRewrapped))
	run.Set("keyring_epoch", int64(r.Epoch))
	run.Set("subject_keys_rewrapped", int64(r.Rewrapped))
	run.Set("subject_keys_migrated", int64(r.Migrated))
	run.Set("subject_keys_failed", int64(r.RewrapFailed))
	run.Set("resealed_subjects", int64(r.ResealedSubjects))
	run.Set("resealed_records", int64(r.ResealedRecords))
	run.Set("reseal_failed_subjects", int64(r.ResealFailed))
}

// rotationProgress prints a rotation's progress: a line when a step
// begins, at most one a second within it, and its last state when it ends.
type rotationProgress struct {
	out     io.Writer
	step    string
	at      time.Time
	last    vault.RotationResult
	pending bool // last was not printed
}

func newRotationProgress(out io.Writer) *rotationProgress { return &rotationProgress{out: out} }

func (p *rotationProgress) print(r vault.RotationResult) {
	if p.out == nil {
		return
	}
	switch {
	case r.Step != p.step:
		if p.pending {
			p.line(p.last)
		}
		p.step = r.Step
		p.line(r)
	case time.Since(p.at) >= time.Second:
		p.line(r)
	default:
		p.last, p.pending = r, true
	}
}

func (p *rotationProgress) line(r vault.RotationResult) {
	p.at, p.pending = time.Now(), false
	switch r.Step {
	case vault.StepRoot:
		fmt.Fprintf(p.out, "key-rotation: root: %d keyring and system keys rewrapped under the root key's newest version\n", r.RootRewrapped)
	case vault.StepRewrap:
		epoch := fmt.Sprintf("keyring epoch %d", r.Epoch)
		if r.NewEpoch {
			epoch += " (new)"
		}
		fmt.Fprintf(p.out, "key-rotation: %s: %d subject keys re-wrapped (%d from the root key), %d failed, %d to go\n",
			epoch, r.Rewrapped, r.Migrated, r.RewrapFailed, r.Remaining)
	case vault.StepReseal:
		fmt.Fprintf(p.out, "key-rotation: re-seal: %d subjects (%d records) given a new key version, %d failed\n",
			r.ResealedSubjects, r.ResealedRecords, r.ResealFailed)
	}
}

// errAuditBroken fails the audit-verify job, so a broken chain shows as a
// failed run in job_runs and in the audit log itself.
var errAuditBroken = errors.New("the audit chain does not verify")

func (a *app) verifyAuditJob(ctx context.Context, run *jobs.Run) error {
	res, err := audit.VerifyWith(ctx, a.db, audit.VerifyOptions{SealInterval: a.cfg.AuditSealInterval})
	if err != nil {
		return err
	}
	run.Set("entries", res.Entries)
	run.Set("unsealed", res.Unsealed)
	if res.Checkpoint != nil { // the walk started there: older entries are purged
		run.Set("checkpoint_pos", res.Checkpoint.Pos)
		run.Set("checkpoint_purged", res.Checkpoint.Purged)
	}
	if !res.OK {
		if res.FirstBadSeq != nil {
			run.Set("first_bad_seq", *res.FirstBadSeq)
		}
		return fmt.Errorf("%w: %s", errAuditBroken, res.Reason)
	}
	return nil
}

// withScheduler builds kluis and its scheduler for a one-off command.
func withScheduler(ctx context.Context, getenv func(string) string, fn func(*app, *jobs.Scheduler) error) error {
	return withApp(ctx, getenv, func(a *app) error {
		s, err := a.scheduler()
		if err != nil {
			return err
		}
		return fn(a, s)
	})
}

func jobsList(ctx context.Context, getenv func(string) string, out io.Writer) error {
	return withScheduler(ctx, getenv, func(_ *app, s *jobs.Scheduler) error {
		infos, err := s.List(ctx)
		if err != nil {
			return err
		}
		sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
		w := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(w, "JOB\tSCHEDULE (UTC)\tNEXT\tLAST RUN\tOUTCOME")
		for _, in := range infos {
			last, outcome := "never", "-"
			if in.LastRun != nil {
				last, outcome = in.LastRun.StartedAt.Format(time.RFC3339), in.LastRun.Outcome
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", in.Name, in.Schedule, in.Next.Format(time.RFC3339), last, outcome)
		}
		return w.Flush()
	})
}

func jobsRun(ctx context.Context, getenv func(string) string, out io.Writer, name string) error {
	return withScheduler(ctx, getenv, func(_ *app, s *jobs.Scheduler) error {
		return runJob(ctx, s, out, name)
	})
}

// retentionDryRun runs the retention purge as a dry run (whatever
// KLUIS_RETENTION_DRY_RUN says) and prints, per class, what would go.
func retentionDryRun(ctx context.Context, getenv func(string) string, out io.Writer) error {
	dry := func(name string) string {
		if name == "KLUIS_RETENTION_DRY_RUN" {
			return "true"
		}
		return getenv(name)
	}
	return withScheduler(ctx, dry, func(a *app, s *jobs.Scheduler) error {
		res, err := s.RunNow(ctx, "retention-purge")
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(w, "CLASS	KEPT FOR	WOULD GO")
		for _, c := range a.cfg.RetentionClasses.Classes() {
			n := fmt.Sprint(res.Counts["would_purge_"+c.Name])
			if res.Counts["skipped_"+c.Name] == 1 {
				n = "skipped (no such table yet)"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\n", c.Name, days(a.cfg.Retention[c.Name]), n)
		}
		if a.cfg.DormantSubjects == 0 {
			fmt.Fprintf(w, "%s\toff\t-\n", compliance.DormantClass)
		} else {
			fmt.Fprintf(w, "%s\t%s\t%d (%d kept under a legal hold, %d seen again)\n", compliance.DormantClass,
				days(a.cfg.DormantSubjects), res.Counts["would_purge_"+compliance.DormantClass], res.Counts["dormant_held"], res.Counts["dormant_seen_again"])
		}
		return w.Flush()
	})
}

// days shows a period in whole days where it is one ("30d"), as settings
// are usually written.
func days(d time.Duration) string {
	const day = 24 * time.Hour
	if d > 0 && d%day == 0 {
		return fmt.Sprintf("%dd", d/day)
	}
	return d.String()
}

func runJob(ctx context.Context, s *jobs.Scheduler, out io.Writer, name string) error {
	res, err := s.RunNow(ctx, name)
	if res.ID != 0 {
		fmt.Fprintf(out, "%s: run %d %s in %s%s\n", name, res.ID, res.Outcome,
			res.FinishedAt.Sub(res.StartedAt).Round(time.Millisecond), formatCounts(res.Counts))
	}
	return err
}

func formatCounts(c map[string]int64) string {
	if len(c) == 0 {
		return ""
	}
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, c[k])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// keysRotate runs the key-rotation job now, under its lock and with its
// job_runs record, like any scheduled run, printing its progress. With
// --new-epoch it starts a new keyring epoch whatever the active one's age.
func keysRotate(ctx context.Context, getenv func(string) string, out io.Writer, args []string) error {
	newEpoch := false
	for _, arg := range args {
		if arg != "--new-epoch" {
			return fmt.Errorf("keys rotate: unknown argument %q (usage: kluis keys rotate [--new-epoch])", arg)
		}
		newEpoch = true
	}
	return withScheduler(ctx, getenv, func(a *app, s *jobs.Scheduler) error {
		a.rotationOut, a.newEpoch = out, newEpoch
		return runJob(ctx, s, out, "key-rotation")
	})
}
