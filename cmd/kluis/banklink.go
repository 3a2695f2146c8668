package main

import (
	"context"
	"fmt"
	"time"

	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/sandbox"
	"github.com/kluis-dev/kluis/breaker"
	"github.com/kluis-dev/kluis/jobs"
)

// openBankLink builds the providers the configuration names and the
// bank-linking service over them, which wakes the event worker.
func (a *app) openBankLink(ctx context.Context) error {
	providers, err := a.bankProviders()
	if err != nil {
		return err
	}
	svc, err := banklink.New(banklink.Options{
		DB: a.db, Vault: a.store, Auditor: a.auditor, Providers: providers, Keys: a.sys,
		Logger: a.log, WebhookURL: a.cfg.BankWebhookURL, Notify: a.worker.Wake,
		BankVerificationDone: a.bankVerificationDone,
	})
	if err != nil {
		return err
	}
	a.warnUnconfiguredProviders(ctx, svc)
	a.bank = svc
	return nil
}

// warnUnconfiguredProviders says at start which providers live items were
// linked through that the configuration no longer names: those items fail
// closed (503) until the provider is configured again.
func (a *app) warnUnconfiguredProviders(ctx context.Context, svc *banklink.Service) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	names, err := svc.UnconfiguredProviders(ctx)
	if err != nil {
		a.log.Warn("could not check the providers of linked items", "cause", err.Error())
		return
	}
	if len(names) > 0 {
		a.log.Warn("linked items belong to bank providers that are not configured: unlinking, erasing and refreshing them fails until KLUIS_BANK_PROVIDERS names them again",
			"providers", names)
	}
}

// bankProviders builds the registry of the configured providers, in the
// order KLUIS_BANK_PROVIDERS names them (the first is the default). Each
// aggregator gets a circuit breaker of its own, so that one that is dead is
// not hammered and its callers get their 503 at once while the others
// serve on; one institution being down does not open it
// (banklink.GuardProvider). The sandbox lives in kluis's own database and needs
// none.
func (a *app) bankProviders() (banklink.Providers, error) {
	var list []banklink.Provider
	for _, name := range a.cfg.BankProviders {
		p, err := a.bankProvider(name)
		if err != nil {
			return nil, err
		}
		if name != "sandbox" {
			b := banklink.GuardProvider(p, breaker.Options{})
			a.bankBreaker = append(a.bankBreaker, b)
			p = b
		}
		list = append(list, p)
	}
	return banklink.NewProviders(list...)
}

// bankProvider builds the sandbox or the Plaid adapter. The sandbox's
// secret is derived from the system keys, so that every instance signs
// and derives alike without another secret to configure; from
// banklink.SystemKeyHeld, because the sandbox items already linked hold
// account numbers derived from it.
func (a *app) bankProvider(name string) (banklink.Provider, error) {
	switch name {
	case "sandbox":
		secret, err := a.sys.MAC(banklink.SystemKeyHeld, []byte("kluis/banklink/sandbox-secret"))
		if err != nil {
			return nil, fmt.Errorf("sandbox secret: %w", err)
		}
		return sandbox.New(sandbox.Options{DB: a.db, Secret: secret})
	case "plaid":
		return plaid.New(plaid.Options{ClientID: a.cfg.PlaidClientID, Secret: a.cfg.PlaidSecret, BaseURL: a.cfg.PlaidBaseURL,
			ClientName: a.cfg.PlaidClientName, CountryCodes: a.cfg.PlaidCountryCodes, Language: a.cfg.PlaidLanguage,
			RedirectURI: a.cfg.PlaidRedirectURI, AndroidPackageName: a.cfg.PlaidAndroidPackageName,
			SameDayMicrodeposits: a.cfg.PlaidSameDayMicrodeposits, AutomatedMicrodeposits: a.cfg.PlaidAutomatedMicrodeposits})
	case "stitch":
		return a.stitchProvider()
	}
	return nil, fmt.Errorf("unknown bank provider %q", name)
}

// registerBankJobs adds access-token rotation (scheduled rotation only with
// KLUIS_BANK_TOKEN_MAX_AGE; every run finishes rotations cut short) and
// link-session expiry.
func (a *app) registerBankJobs(s *jobs.Scheduler) error {
	svc := a.bank
	maxAge := a.cfg.BankTokenMaxAge
	if err := s.Register(jobs.Job{
		Name: "bank-token-rotation", Schedule: "23 4 * * *", Timeout: 2 * time.Hour,
		Run: func(ctx context.Context, run *jobs.Run) error {
			res, err := svc.RotateAccessTokens(ctx, maxAge, 0)
			run.Set("rotated", int64(res.Rotated))
			run.Set("finished", int64(res.Finished))
			run.Set("relink_required", int64(res.RelinkRequired))
			run.Set("failed", int64(res.Failed))
			if err == nil && res.Failed > 0 {
				err = fmt.Errorf("%d access tokens could not be rotated; the next run retries them", res.Failed)
			}
			return err
		},
	}); err != nil {
		return err
	}
	if err := registerPlaidJobs(a, s, svc); err != nil {
		return err
	}
	return s.Register(jobs.Job{
		Name: "link-session-expiry", Schedule: "*/10 * * * *", Timeout: 5 * time.Minute,
		Run: func(ctx context.Context, run *jobs.Run) error {
			n, err := svc.ExpireLinkSessions(ctx, 0)
			run.Set("expired", int64(n))
			return err
		},
	})
}
