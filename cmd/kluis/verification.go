package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/events"
	"github.com/kluis-dev/kluis/jobs"
	"github.com/kluis-dev/kluis/verification"
	"github.com/kluis-dev/kluis/verification/sandboxrail"
)

func init() {
	depHooks = append(depHooks, func(a *app, d *api.Deps) error {
		parts, err := a.verification()
		if err != nil {
			return err
		}
		d.Verification = parts.svc
		// serve is the one command that builds Deps: the event worker runs
		// with it, and stops (waited for) when the app closes.
		ctx, cancel := context.WithCancel(context.Background())
		go parts.worker.Run(ctx)
		a.closers = append(a.closers, func() { cancel(); <-parts.worker.Done() })
		return nil
	})
	jobHooks = append(jobHooks, registerVerificationJobs)
}

// verificationParts are the verification service and the event worker it
// wakes, one of each per app.
type verificationParts struct {
	svc    *verification.Service
	worker *events.Worker
}

// verification builds (once per app) the verification service, and the
// event delivery worker for the configured app endpoints. Rails are per
// bank provider: the sandbox's accounts go over the sandbox rail, other
// providers' have none yet (instant verification only, until a real rail
// adapter exists); manual accounts use the default (first) provider's
// rail. The item's provider is asked of bank linking.
func (a *app) verification() (*verificationParts, error) {
	if a.verify != nil {
		return a.verify, nil
	}
	secret, err := webhookSecret(a.cfg.WebhookSecret, a.cfg.WebhookSecretFile)
	if err != nil {
		return nil, err
	}
	worker, err := events.NewWorker(events.WorkerOptions{DB: a.db, Endpoints: a.cfg.WebhookEndpoints, Secret: secret,
		Logger: a.log, RetryFor: a.cfg.WebhookRetryFor})
	if err != nil {
		return nil, err
	}
	opts := verification.Options{DB: a.db, Vault: a.store, Auditor: a.auditor, Keys: a.sys, Logger: a.log,
		Attempts: a.cfg.VerificationAttempts, Window: a.cfg.VerificationWindow, AnswerKind: a.cfg.MicroDepositKind,
		Notify: worker.Wake, Lockout: a.cfg.VerificationLockout, NumberFailures: a.cfg.VerificationNumberFailures}
	bank, err := a.bankLink()
	if err != nil {
		return nil, err
	}
	opts.Items, opts.Rails = bank, map[string]verification.Rail{}
	if a.cfg.HasBankProvider("sandbox") {
		opts.Rails["sandbox"] = sandboxrail.New(a.db, a.sys, a.cfg.SandboxRailDelay, nil)
	}
	opts.Rail = opts.Rails[a.cfg.BankProvider]
	svc, err := verification.New(opts)
	if err != nil {
		return nil, err
	}
	// Providers' own micro-deposits (Plaid's) move verifications through
	// the one state machine.
	bank.SetAccountVerifications(svc)
	a.verify = &verificationParts{svc: svc, worker: worker}
	return a.verify, nil
}

// webhookSecret is KLUIS_WEBHOOK_SECRET, or the first line of
// KLUIS_WEBHOOK_SECRET_FILE.
func webhookSecret(value, file string) ([]byte, error) {
	if file == "" {
		return []byte(value), nil
	}
	b, err := os.ReadFile(file) // #nosec G304 -- KLUIS_WEBHOOK_SECRET_FILE, the operator's setting
	if err != nil {
		return nil, errors.New("KLUIS_WEBHOOK_SECRET_FILE cannot be read")
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSpace(line)
	if len(line) < 32 {
		return nil, errors.New("KLUIS_WEBHOOK_SECRET_FILE must hold a secret of at least 32 bytes")
	}
	return []byte(line), nil
}

// registerVerificationJobs adds the expiry sweep and the rail poll.
func registerVerificationJobs(a *app, s *jobs.Scheduler) error {
	parts, err := a.verification()
	if err != nil {
		return err
	}
	svc := parts.svc
	if err := s.Register(jobs.Job{
		Name: verification.JobExpiry, Schedule: "*/15 * * * *", Timeout: 10 * time.Minute,
		Run: func(ctx context.Context, run *jobs.Run) error {
			n, err := svc.ExpireDue(ctx)
			run.Set("expired", int64(n))
			return err
		},
	}); err != nil {
		return err
	}
	return s.Register(jobs.Job{
		Name: verification.JobRailPoll, Schedule: "@every 1m", Timeout: 10 * time.Minute,
		Run: func(ctx context.Context, run *jobs.Run) error {
			res, err := svc.PollRail(ctx)
			run.Set("posted", int64(res.Posted))
			run.Set("returned", int64(res.Returned))
			run.Set("resent", int64(res.Resent))
			if err != nil {
				return fmt.Errorf("poll the payment rail: %w", err)
			}
			return nil
		},
	})
}
