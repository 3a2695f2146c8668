package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	bankbreaker "github.com/kluis-dev/kluis/banklink/breaker"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/logging"
	"github.com/kluis-dev/kluis/migrations"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/awskms"
	"github.com/kluis-dev/kluis/vault/breaker"
	"github.com/kluis-dev/kluis/vault/localkek"
	"github.com/kluis-dev/kluis/vault/transit"
)

// app is kluis built from its configuration: the parts every command that
// touches data needs.
type app struct {
	cfg     *config.Config
	log     *slog.Logger
	db      *postgres.DB
	keys    vault.KeyProvider
	sys     *vault.SystemKeys
	ring    *vault.KeyRing
	store   *vault.Store
	auditor *compliance.Auditor
	// Feature services, built once on first use (handlers and jobs share them).
	bank        *banklink.Service
	bankBreaker []*bankbreaker.Provider // one breaker per bank provider but the sandbox
	comp        *compliance.Service
	verify      *verificationParts
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

// build connects to the database and the key provider and loads the system
// keys. It refuses to run on a schema with pending migrations.
func build(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*app, error) {
	a := &app{cfg: cfg, log: logger}
	pending, err := migrations.Pending(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("check migrations: %w", err)
	}
	if pending {
		return nil, fmt.Errorf("the database schema is out of date: run `kluis migrate` first")
	}
	if a.db, err = postgres.Open(ctx, cfg.DatabaseURL); err != nil {
		return nil, err
	}
	a.closers = append(a.closers, a.db.Close)
	if err := checkServingRole(ctx, cfg, a.db, logger); err != nil {
		a.close()
		return nil, err
	}
	if a.keys, err = newKeyProvider(ctx, cfg, logger); err != nil {
		a.close()
		return nil, err
	}
	a.keys = breaker.New(a.keys, breaker.Options{}) // a dead provider is not hammered; callers get 503 at once
	if c, ok := a.keys.(interface{ Close() error }); ok {
		a.closers = append(a.closers, func() { _ = c.Close() })
	}
	if a.sys, err = loadSystemKeys(ctx, a.db, a.keys, logger); err != nil {
		a.close()
		return nil, err
	}
	a.closers = append(a.closers, a.sys.Close)
	a.ring = vault.NewKeyRing(a.keys, vault.CacheOptions{
		MaxAge: cfg.KeyCacheMaxAge, MaxUses: cfg.KeyCacheMaxUses, MaxKeys: cfg.KeyCacheMaxKeys,
	})
	a.closers = append(a.closers, a.ring.Purge)
	a.store = vault.NewStore(a.db, a.ring, a.sys)
	a.auditor = compliance.NewAuditor(a.db, a.sys, nil)
	return a, nil
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

// loadSystemKeys retries while the key provider is unavailable, up to
// startupWait: kluis does not start without its keys.
func loadSystemKeys(ctx context.Context, db *postgres.DB, keys vault.KeyProvider, logger *slog.Logger) (*vault.SystemKeys, error) {
	deadline := time.Now().Add(startupWait)
	wait := 500 * time.Millisecond
	for {
		sys, err := vault.LoadSystemKeys(ctx, db, keys)
		if err == nil {
			return sys, nil
		}
		// Only an unreachable provider is worth waiting for; a refusal (a
		// wrong root key, say) will not go away by itself.
		if kluis.ErrorCode(err) != kluis.EUnavailable {
			return nil, fmt.Errorf("%w: %w", errKeysRefused, err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("load system keys: %w", err)
		}
		logger.Warn("key provider not usable yet; retrying", "cause", err.Error())
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
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
