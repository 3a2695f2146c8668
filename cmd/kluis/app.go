package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api/idempotency"
	"github.com/kluis-dev/kluis/apps"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/breaker"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/events"
	"github.com/kluis-dev/kluis/hosted"
	"github.com/kluis-dev/kluis/logging"
	"github.com/kluis-dev/kluis/migrations"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/awskms"
	"github.com/kluis-dev/kluis/vault/localkek"
	"github.com/kluis-dev/kluis/vault/transit"
	"github.com/kluis-dev/kluis/verification"
)

// app is kluis built from its configuration: every part, built once by
// build in the order each needs the ones before, and shared by the
// handlers, the jobs and the commands.
type app struct {
	cfg     *config.Config
	log     *slog.Logger
	db      *postgres.DB
	keys    vault.KeyProvider
	sys     *vault.SystemKeys
	ring    *vault.KeyRing
	store   *vault.Store
	auditor *audit.Auditor
	// revealAudit commits reveals' audit entries, several callers' in one
	// transaction (it runs no goroutine: nothing to stop).
	revealAudit *audit.Group
	// worker delivers every feature's events (the outbox) to the apps'
	// endpoints; serve starts and stops it.
	worker *events.Worker
	// rotation is the key-rotation job's progress, for /metrics;
	// rotationOut, when set (`kluis keys rotate`), gets its progress lines.
	rotation    *vault.RotationMetrics
	rotationOut io.Writer
	newEpoch    bool // `kluis keys rotate --new-epoch`
	// The features.
	bank        *banklink.Service
	bankBreaker []*banklink.GuardedProvider // one breaker per bank provider but the sandbox
	comp        *compliance.Service
	verify      *verification.Service
	apps        *apps.Registry
	// registry is the serving process's Prometheus registry (nil for
	// one-off commands), which the scheduler's job metrics join.
	registry *prometheus.Registry
	closers  []func()
}

// startupWait bounds how long start-up waits for the key provider: kluis
// will not serve without it (fail closed), but a provider that is a few
// seconds late should not need a restart.
const startupWait = 30 * time.Second

func newLogger(cfg *config.Config, out io.Writer) (*slog.Logger, error) {
	level, err := logging.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	return logging.New(out, level), nil
}

// build builds every part of kluis in order, each from the ones before
// it: the database (refusing a schema with pending migrations), the key
// provider and the system keys, the vault, the audit writer, the event
// outbox (after the apps, whose endpoints it serves), then the features. On an error it closes what it opened.
func build(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*app, error) {
	a := &app{cfg: cfg, log: logger}
	for _, step := range []func(context.Context) error{
		a.openDatabase,
		a.openKeys,
		a.openVault,
		a.openAudit,
		a.openApps,
		a.openEvents,
		a.openBankLink,
		a.openCompliance,
		a.openVerification,
	} {
		if err := step(ctx); err != nil {
			a.close()
			return nil, err
		}
	}
	return a, nil
}

// openDatabase connects to the database, once its schema is up to date and
// the role is one kluis may serve as.
func (a *app) openDatabase(ctx context.Context) error {
	pending, err := migrations.Pending(ctx, a.cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("check migrations: %w", err)
	}
	if pending {
		return fmt.Errorf("the database schema is out of date: run `kluis migrate` first")
	}
	if a.db, err = postgres.Open(ctx, a.cfg.DatabaseURL); err != nil {
		return err
	}
	a.closers = append(a.closers, a.db.Close)
	return checkServingRole(ctx, a.cfg, a.db, a.log)
}

// openKeys builds the root-key provider, behind its circuit breaker (a dead
// provider is not hammered; callers get 503 at once), and loads the system
// keys, waiting a while for a provider that is late.
func (a *app) openKeys(ctx context.Context) error {
	keys, err := newKeyProvider(ctx, a.cfg, a.log)
	if err != nil {
		return err
	}
	a.keys = vault.GuardKeyProvider(keys, breaker.Options{})
	if c, ok := a.keys.(interface{ Close() error }); ok {
		a.closers = append(a.closers, func() { _ = c.Close() })
	}
	if a.sys, err = loadSystemKeys(ctx, a.db, a.keys, a.cfg.KeyringRecheck, a.log); err != nil {
		return err
	}
	a.closers = append(a.closers, a.sys.Close)
	return nil
}

// openVault builds the subject-key ring and the credential store, with
// the credential kinds each feature registers (the vault knows no bank),
// and loads the keyring keys (made on a first start): kluis does not start
// unless it can serve work that needs keys.
func (a *app) openVault(ctx context.Context) error {
	kinds, err := vault.NewKinds(slices.Concat(banklink.CredentialKinds(), verification.CredentialKinds())...)
	if err != nil {
		return err
	}
	a.ring = vault.NewKeyRing(a.keys, vault.CacheOptions{
		MaxAge: a.cfg.KeyCacheMaxAge, MaxUses: a.cfg.KeyCacheMaxUses, MaxKeys: a.cfg.KeyCacheMaxKeys,
		KeyringRecheck: a.cfg.KeyringRecheck,
	})
	a.closers = append(a.closers, a.ring.Purge)
	a.store = vault.NewStore(a.db, a.ring, a.sys, kinds)
	a.rotation = vault.NewRotationMetrics(a.ring)
	return waitForProvider(ctx, a.log, "load keyring keys", func() error { return a.ring.LoadKeyring(ctx, a.db.Aside()) })
}

// openAudit builds the audit writer, naming people by the system keys'
// pseudonyms, and the group commit that reveals' entries go through.
func (a *app) openAudit(context.Context) error {
	a.auditor = audit.NewAuditor(a.db, a.sys, nil)
	a.revealAudit = audit.NewGroup(a.auditor, audit.GroupOptions{})
	return nil
}

// openEvents builds the event outbox's delivery worker for the apps'
// endpoints. Features wake it after enqueuing; serve runs it.
func (a *app) openEvents(context.Context) error {
	var err error
	a.worker, err = events.NewWorker(events.WorkerOptions{DB: a.db, Apps: a.apps, Logger: a.log, RetryFor: a.cfg.WebhookRetryFor})
	return err
}

// checkServingRole refuses, in production, a database role that could
// rewrite the audit log's history (migrations.CheckServingRole: a
// superuser, an owner of kluis's objects, …); in development it only warns,
// since one role for everything is the usual laptop setup.
func checkServingRole(ctx context.Context, cfg *config.Config, db *postgres.DB, logger *slog.Logger) error {
	err := migrations.CheckServingRole(ctx, db.Pool)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, migrations.ErrUnsafeServingRole):
		return err
	case cfg.Production():
		return fmt.Errorf("%w\n  serve as the role `kluis migrate` grants (KLUIS_DATABASE_URL), and migrate as the owner (KLUIS_MIGRATE_DATABASE_URL): docs/DEPLOYMENT.md", err)
	}
	logger.Warn("the database role could rewrite the audit log; production refuses it", "cause", err.Error())
	return nil
}

// close releases what build opened, newest first.
func (a *app) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

// errKeysRefused: the key provider answered but would not unwrap kluis's
// stored keys: they were wrapped under another root key.
var errKeysRefused = errors.New("the key provider refused to unwrap kluis's stored keys (are they from another root key?)")

// systemKeyNames are the system keys kluis loads: the vault's own and each
// feature's, which name their keys as they register their credential kinds
// (the vault knows none of the features' names). Two features may name one
// stored key (banklink.SystemKeyHeld is verification.SystemKey's key); it
// is loaded once, and it lists once here.
func systemKeyNames() []string {
	names := slices.Concat(vault.DefaultSystemKeys, verification.SystemKeys(), banklink.SystemKeys(),
		idempotency.SystemKeys(), hosted.SystemKeys())
	slices.Sort(names)
	return slices.Compact(names)
}

// loadSystemKeys retries while the key provider is unavailable, up to
// startupWait: kluis does not start without its keys. They are confirmed
// with the provider within recheck (KLUIS_KEYRING_RECHECK), as keyring
// keys are.
func loadSystemKeys(ctx context.Context, db *postgres.DB, keys vault.KeyProvider, recheck time.Duration, logger *slog.Logger) (*vault.SystemKeys, error) {
	var sys *vault.SystemKeys
	err := waitForProvider(ctx, logger, "load system keys", func() error {
		var err error
		sys, err = vault.LoadSystemKeysWith(ctx, db, keys, vault.SystemKeyOptions{Recheck: recheck}, systemKeyNames()...)
		return err
	})
	return sys, err
}

// waitForProvider runs load until it succeeds, retrying while the key
// provider is unavailable, up to startupWait. Only an unreachable provider
// is worth waiting for; a refusal (a wrong root key, say) will not go away
// by itself.
func waitForProvider(ctx context.Context, logger *slog.Logger, what string, load func() error) error {
	deadline := time.Now().Add(startupWait)
	wait := 500 * time.Millisecond
	for {
		err := load()
		if err == nil {
			return nil
		}
		if kluis.ErrorCode(err) != kluis.EUnavailable {
			return fmt.Errorf("%w: %w", errKeysRefused, err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		logger.Warn("key provider not usable yet; retrying", "cause", err.Error())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// providerCallTimeout bounds one call to KMS or Vault well inside the request
// deadline, so that a hanging provider fails the call (and counts towards
// opening the breaker) while the request can still answer its 503 in time.
func providerCallTimeout(cfg *config.Config) time.Duration {
	return min(cfg.RequestTimeout/2, 5*time.Second)
}

// newKeyProvider builds the root-key provider the configuration names.
func newKeyProvider(ctx context.Context, cfg *config.Config, logger *slog.Logger) (vault.KeyProvider, error) {
	switch cfg.KeyProvider {
	case "local":
		return localkek.New(cfg.LocalKEKFile)
	case "awskms":
		return awskms.New(ctx, cfg.AWSKMSKeyID, awskms.WithCallTimeout(providerCallTimeout(cfg)))
	case "transit":
		return transit.New(cfg.TransitMount, cfg.TransitKey, transit.WithLogger(logger), transit.WithTimeout(providerCallTimeout(cfg)))
	}
	return nil, fmt.Errorf("unknown key provider %q", cfg.KeyProvider)
}
