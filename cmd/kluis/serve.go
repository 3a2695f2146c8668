package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/jwtauth"
	"github.com/kluis-dev/kluis/api/ratelimit"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/hosted"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/reveal"
)

// serve runs both listeners, the audit sealer and the scheduler until ctx
// ends, then drains requests for up to the shutdown grace.
func serve(ctx context.Context, getenv func(string) string, out io.Writer) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	logger, err := newLogger(cfg, out)
	if err != nil {
		return err
	}
	a, err := build(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer a.close()
	return a.serve(ctx, nil)
}

// serve runs the listeners. ready, if not nil, receives the bound addresses
// once both listen (tests and `kluis dev` use it).
func (a *app) serve(ctx context.Context, ready chan<- [2]string) error {
	deps, err := a.deps(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	sched, err := a.scheduler()
	if err != nil {
		return err
	}
	servers, listeners, err := a.listen(deps)
	if err != nil {
		return err
	}
	if err := sched.Start(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(servers))
	for i := range servers {
		wg.Add(1)
		go func(srv *http.Server, ln net.Listener) {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- err
			}
		}(servers[i], listeners[i])
	}
	a.background(ctx, &wg)
	stopRefusals := a.watch(ctx, &wg, deps)
	addrs := [2]string{listeners[0].Addr().String()}
	if len(listeners) > 1 {
		addrs[1] = listeners[1].Addr().String()
	}
	a.log.Info("kluis serving", "public", addrs[0], "internal", addrs[1], "env", a.cfg.Env,
		"key_provider", a.cfg.KeyProvider, "bank_providers", a.cfg.BankProviders)
	if ready != nil {
		ready <- addrs
	}
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	a.shutdown(servers)
	stopRefusals()
	cancel()
	wg.Wait()
	<-sched.Done()
	return err
}

// deps builds what the handlers need.
func (a *app) deps(ctx context.Context) (*api.Deps, error) {
	verifier, err := jwtauth.New(ctx, jwtauth.Options{
		JWKSFile: a.cfg.JWKSFile, JWKSURL: a.cfg.JWKSURL, Issuer: a.cfg.JWTIssuer,
		UserAudience: a.cfg.JWTAudience, StaffAudience: a.cfg.StaffJWTAudience, Logger: a.log,
	})
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, verifier.Close)
	users, err := a.userVerifiers(ctx, a.apps, verifier)
	if err != nil {
		return nil, err
	}
	var policy *api.Policy
	if a.cfg.ServicePolicyFile != "" {
		if policy, err = api.LoadPolicy(a.cfg.ServicePolicyFile); err != nil {
			return nil, err
		}
	}
	registry := prometheus.NewRegistry()
	a.registry = registry
	if b, ok := a.keys.(*vault.GuardedKeyProvider); ok {
		registry.MustRegister(b.Collector())
	}
	registry.MustRegister(a.rotation)
	limiter, err := a.rateLimiter(registry)
	if err != nil {
		return nil, err
	}
	limits := rateLimits(a.cfg)
	for _, b := range a.bankBreaker {
		registry.MustRegister(b.Collector())
	}
	registry.MustRegister(a.worker.Collector())
	return &api.Deps{
		DB: a.db, Auditor: a.auditor, Pseudonyms: a.sys, MACs: a.sys, Auth: api.JWTAuthenticator{Verifier: verifier, Users: users},
		Apps: a.apps, OnReplay: a.worker.Wake, Policy: policy, Vault: a.store, Logger: a.log, Registry: registry,
		Reveal:      a.reveal(policy),
		RateLimiter: limiter, RateLimits: &limits, IdempotencyTTL: a.cfg.IdempotencyTTL,
		AuditHeads: a.sys, AuditSealInterval: a.cfg.AuditSealInterval,
		Ready: map[string]func(context.Context) error{
			"database": a.db.Ping,
			// Readiness means "can serve": the keyring key confirmed
			// within KLUIS_KEYRING_RECHECK, not "the provider answered a
			// ping" (a provider down for a minute does not stop kluis).
			// The system keys are under the same bound.
			"key_provider": func(ctx context.Context) error {
				if err := a.ring.Ready(ctx); err != nil {
					return err
				}
				return a.sys.Ready(ctx)
			},
		},
		Refusals: compliance.NewRefusals(a.auditor, compliance.RefusalOptions{Logger: a.log}), Clock: kluis.SystemClock{},
		StaffMFAMaxAge: a.cfg.StaffMFAMaxAge, StaffTokenMaxLifetime: a.cfg.StaffTokenMaxLifetime,
		TrustedProxies: a.cfg.TrustedProxies, TrustDomain: a.cfg.SPIFFETrustDomain, RequestTimeout: a.cfg.RequestTimeout,
		PublicTLS: a.cfg.PublicTLSCert != "",
		BankLink:  a.bank, Compliance: a.comp, Verification: a.verify,
		// Hosted pages and browser apps (docs/HOSTED.md).
		Hosted: hosted.NewStore(a.db, a.sys, nil), PublicURL: a.cfg.PublicURL,
		Origins: api.StaticOrigins(a.cfg.AppOrigins), HostedPageTTL: a.cfg.HostedPageTTL,
		PlaidLink: api.PlaidLink{ScriptURL: a.cfg.PlaidLinkScriptURL, Integrity: a.cfg.PlaidLinkScriptIntegrity},
	}, nil
}

// reveal wires the vault's reveal use case to its ports' owners: the
// service policy, bank linking's pointers and usable secrets (Stitch's
// renewal), and the audit log's group commit (each reveal still waits for
// its own entry's commit before its secret leaves).
func (a *app) reveal(policy *api.Policy) *reveal.Service {
	return reveal.New(reveal.Options{
		Records: a.store, Policy: policy, Pointers: a.bank, Secrets: api.BankSecrets(a.bank),
		Audit: a.revealAudit, Logger: a.log,
	})
}

// listen binds the public listener and, when configured, the internal one
// (mutual TLS only: without its TLS settings it is not started at all).
func (a *app) listen(deps *api.Deps) ([]*http.Server, []net.Listener, error) {
	errLog := log.New(slogWriter{a.log}, "", 0)
	pub := api.NewHTTPServer(a.cfg.PublicAddr, api.NewPublic(deps), a.cfg.RequestTimeout)
	pub.ErrorLog = errLog
	if a.cfg.PublicTLSCert != "" {
		tc, err := api.PublicTLSConfig(a.cfg.PublicTLSCert, a.cfg.PublicTLSKey)
		if err != nil {
			return nil, nil, err
		}
		pub.TLSConfig = tc
	}
	servers := []*http.Server{pub}
	if a.cfg.InternalTLS() {
		tc, err := api.InternalTLSConfig(a.cfg.InternalTLSCert, a.cfg.InternalTLSKey, a.cfg.InternalClientCA)
		if err != nil {
			return nil, nil, err
		}
		in := api.NewHTTPServer(a.cfg.InternalAddr, api.NewInternal(deps), a.cfg.RequestTimeout)
		in.TLSConfig, in.ErrorLog = tc, errLog
		servers = append(servers, in)
	} else {
		a.log.Warn("internal listener not started: KLUIS_INTERNAL_TLS_CERT, KLUIS_INTERNAL_TLS_KEY and KLUIS_INTERNAL_CLIENT_CA are not set")
	}
	var listeners []net.Listener
	for _, srv := range servers {
		ln, err := net.Listen("tcp", srv.Addr)
		if err != nil {
			for _, l := range listeners {
				_ = l.Close() // unwinding after the error returned below
			}
			return nil, nil, fmt.Errorf("listen on %s: %w", srv.Addr, err)
		}
		if srv.TLSConfig != nil {
			ln = tls.NewListener(ln, srv.TLSConfig)
		}
		listeners = append(listeners, ln)
	}
	return servers, listeners, nil
}

// background starts the long-running parts that stop with ctx: the audit
// sealer, the subject-key cache janitor, the keyring's and the system
// keys' rechecks and the
// event outbox's delivery worker.
func (a *app) background(ctx context.Context, wg *sync.WaitGroup) {
	sealer := audit.NewSealer(a.db, 0)
	wg.Add(5)
	go func() {
		defer wg.Done()
		a.ring.RunKeyringRecheck(ctx)
	}()
	go func() {
		defer wg.Done()
		a.sys.RunRecheck(ctx)
	}()
	go func() {
		defer wg.Done()
		a.worker.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		sealer.Run(ctx, a.cfg.AuditSealInterval, func(err error) {
			a.log.Error("audit sealer failed; retrying", "cause", err.Error())
		})
	}()
	go func() {
		defer wg.Done()
		a.ring.RunJanitor(ctx, 30*time.Second)
	}()
}

// watch starts what follows the handlers' own state: the aggregated audit of
// refusals, written each minute and, once stopRefusals is called (after the
// listeners have drained, not when the signal arrives), all that is left;
// and the service policy, reloaded when its file changes and on SIGHUP,
// until ctx ends.
func (a *app) watch(ctx context.Context, wg *sync.WaitGroup, deps *api.Deps) (stopRefusals func()) {
	rctx, stopRefusals := context.WithCancel(context.WithoutCancel(ctx))
	wg.Add(1)
	go func() {
		defer wg.Done()
		deps.Refusals.Run(rctx, 5*time.Second)
	}()
	// Each watched file has its own SIGHUP channel: one signal reloads both.
	if a.apps != nil && a.apps.FromFile() {
		a.onSIGHUP(ctx, wg, a.watchApps)
	}
	if deps.Policy == nil || a.cfg.ServicePolicyFile == "" {
		return stopRefusals
	}
	a.onSIGHUP(ctx, wg, func(ctx context.Context, hup <-chan os.Signal) {
		deps.Policy.Watch(ctx, api.PolicyPollInterval, hup, a.log)
	})
	return stopRefusals
}

// onSIGHUP runs watch until ctx ends, with a channel that receives SIGHUP.
func (a *app) onSIGHUP(ctx context.Context, wg *sync.WaitGroup, watch func(context.Context, <-chan os.Signal)) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer signal.Stop(hup)
		watch(ctx, hup)
	}()
}

func (a *app) shutdown(servers []*http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownGrace)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil {
			a.log.Warn("shutdown did not drain in time", "addr", srv.Addr, "cause", err.Error())
		}
	}
	a.log.Info("kluis stopped")
}

// slogWriter sends net/http's own error log (refused TLS handshakes, say) to
// slog at debug level: they are the client's problem, not kluis's.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Debug("http server", "detail", string(p))
	return len(p), nil
}

// rateLimiter counts in Redis when KLUIS_REDIS_URL is set, falling back to
// per-instance memory while Redis is unreachable; in memory otherwise.
func (a *app) rateLimiter(reg prometheus.Registerer) (ratelimit.Limiter, error) {
	mem := ratelimit.NewMemory(0)
	if a.cfg.RedisURL == "" {
		return mem, nil
	}
	rdb, err := ratelimit.NewRedisClient(a.cfg.RedisURL)
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, func() { _ = rdb.Close() })
	return ratelimit.NewFallback(ratelimit.NewRedis(rdb, "kluis:"), mem, a.log, reg), nil
}

// rateLimits turns the configured rates into the api's limits.
func rateLimits(cfg *config.Config) api.RateLimits {
	limit := func(r config.Rate) ratelimit.Limit {
		return ratelimit.Limit{Rate: r.Events, Period: r.Per, Burst: r.Events}
	}
	return api.RateLimits{
		Address: limit(cfg.RateAddress), Subject: limit(cfg.RateSubject), Service: limit(cfg.RateService),
		IPv6Prefix: cfg.RateLimitIPv6Prefix,
		Operations: map[string]ratelimit.Limit{
			api.OpLinkSession:         limit(cfg.RateLinkSession),
			api.OpTokenExchange:       limit(cfg.RateTokenExchange),
			api.OpVerificationConfirm: limit(cfg.RateVerificationConfirm),
			api.OpReveal:              limit(cfg.RateReveal),
			api.OpManualAccount:       limit(cfg.RateManualAccount),
			api.OpVerificationStart:   limit(cfg.RateVerificationStart),
		},
	}
}
