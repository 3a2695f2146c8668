package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/jobs"
	"github.com/kluis-dev/kluis/verification"
	"github.com/kluis-dev/kluis/verification/sandboxrail"
)

// openVerification builds the verification service, which wakes the event
// worker. Rails are per bank provider: the sandbox's accounts go over the
// sandbox rail, other providers' have none yet (instant verification only,
// until a real rail adapter exists); manual accounts use the default
// (first) provider's rail. Accounts and their items' providers are asked
// of bank linking, through verification's Accounts port.
func (a *app) openVerification(context.Context) error {
	opts := verification.Options{DB: a.db, Vault: a.store, Auditor: a.auditor, Keys: a.sys, Logger: a.log,
		Attempts: a.cfg.VerificationAttempts, Window: a.cfg.VerificationWindow, AnswerKind: a.cfg.MicroDepositKind,
		Notify: a.worker.Wake, Lockout: a.cfg.VerificationLockout, NumberFailures: a.cfg.VerificationNumberFailures}
	opts.Accounts, opts.Rails = banklink.NewAccountStore(a.db), map[string]verification.Rail{}
	if a.cfg.HasBankProvider("sandbox") {
		opts.Rails["sandbox"] = sandboxrail.New(a.db, a.sys, a.cfg.SandboxRailDelay, nil)
	}
	opts.Rail = opts.Rails[a.cfg.BankProvider]
	var err error
	if opts.BankVerifiers, err = a.bankVerifiers(); err != nil {
		return err
	}
	opts.RequiredChecks = a.cfg.BAVRequiredChecks
	svc, err := verification.New(opts)
	if err != nil {
		return err
	}
	// Providers' own micro-deposits (Plaid's) move verifications through
	// the one state machine.
	a.bank.SetAccountVerifications(svc)
	a.verify = svc
	return nil
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
func (a *app) registerVerificationJobs(s *jobs.Scheduler) error {
	svc := a.verify
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
