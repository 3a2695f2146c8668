package main

import (
	"context"
	"fmt"
	"time"

	"github.com/kluis-dev/kluis/jobs"
	"github.com/kluis-dev/kluis/verification"
	"github.com/kluis-dev/kluis/verification/sandboxbav"
	"github.com/kluis-dev/kluis/verification/stitchbav"
)

// bankVerifiers are the bank account verifiers of the configured
// providers: Stitch's first (it verifies new ones when configured), then
// the sandbox's. None: bank account verification is 422.
func (a *app) bankVerifiers() ([]verification.BankVerifier, error) {
	var out []verification.BankVerifier
	if a.cfg.HasBankProvider("stitch") {
		p, err := a.stitchProvider()
		if err != nil {
			return nil, err
		}
		out = append(out, stitchbav.New(p))
	}
	if a.cfg.HasBankProvider("sandbox") {
		out = append(out, sandboxbav.New())
	}
	return out, nil
}

// bankVerificationDone completes the bank verification a provider's
// webhook names (banklink.Options.BankVerificationDone).
func (a *app) bankVerificationDone(ctx context.Context, provider, ref string) error {
	if a.verify == nil {
		return fmt.Errorf("bank verification webhook: verification is not running")
	}
	return a.verify.CompleteBankVerification(ctx, provider, ref)
}

// registerBankVerificationJob adds the poll that completes pending bank
// account verifications (and submits again those the verifier could not
// take), every minute.
func (a *app) registerBankVerificationJob(s *jobs.Scheduler) error {
	svc := a.verify
	return s.Register(jobs.Job{
		Name: verification.JobBankPoll, Schedule: "@every 1m", Timeout: 10 * time.Minute,
		Run: func(ctx context.Context, run *jobs.Run) error {
			res, err := svc.PollBankVerifications(ctx)
			run.Set("completed", int64(res.Completed))
			run.Set("submitted", int64(res.Submitted))
			if err != nil {
				return fmt.Errorf("poll bank verifications: %w", err)
			}
			return nil
		},
	})
}
