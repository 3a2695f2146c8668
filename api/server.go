// Package api is kluis's HTTP surface: the public listener (end users'
// apps and bank-data providers) and the internal listener (services over
// mutual TLS, and compliance staff through their console). Handlers decode,
// authorize and validate, then call the feature packages; they hold no SQL.
package api

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api/idempotency"
	"github.com/kluis-dev/kluis/api/ratelimit"
	"github.com/kluis-dev/kluis/apps"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/hosted"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/reveal"
	"github.com/kluis-dev/kluis/verification"
)

// Deps is what the handlers need. The same Deps builds both listeners.
type Deps struct {
	DB         *postgres.DB
	Auditor    *audit.Auditor
	Pseudonyms audit.Pseudonymizer
	Auth       Authenticator
	Policy     *Policy
	// Vault seals and opens credentials.
	Vault *vault.Store
	// Reveal is the vault's reveal use case (vault/reveal), wired by
	// cmd/kluis with the group-committing audit log; built over Vault,
	// Policy, BankLink and Auditor if nil.
	Reveal *reveal.Service
	Logger *slog.Logger
	// Registry collects kluis's metrics; /metrics serves it.
	Registry *prometheus.Registry
	// Ready lists the dependencies /readyz checks, by name.
	Ready map[string]func(ctx context.Context) error
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// TrustDomain, if set, is the only SPIFFE trust domain whose IDs name
	// internal services (KLUIS_SPIFFE_TRUST_DOMAIN).
	TrustDomain    string
	RequestTimeout time.Duration
	// PublicTLS and InternalTLS say whether the listeners serve TLS, for HSTS.
	PublicTLS bool
	// BankLink is bank linking (link sessions, items, accounts, provider
	// webhooks); nil leaves its routes out.
	BankLink *banklink.Service
	// Compliance is legal holds, erasure and subject export; nil leaves
	// their routes out.
	Compliance *compliance.Service
	// Verification is account verification and manual entry; nil leaves
	// its routes out.
	Verification *verification.Service
	// RateLimiter counts requests (ratelimit.NewMemory if nil); RateLimits
	// says how many (DefaultRateLimits if nil).
	RateLimiter ratelimit.Limiter
	RateLimits  *RateLimits

	// AuditHeads checks the signatures of anchored audit heads given to
	// POST /compliance/v1/audit/verify (the vault's system keys);
	// AuditSealInterval is the sealer's interval, which bounds how long an
	// entry may stay unsealed (audit.DefaultSealInterval if zero).
	AuditHeads        audit.HeadKey
	AuditSealInterval time.Duration

	// IdempotencyTTL is how long Idempotency-Key answers are kept (24 h if
	// zero; the contract: at least 24 hours).
	IdempotencyTTL time.Duration
	idem           *idempotency.Store
	// seen throttles the record of users' activity (dormant retention).
	seen vault.Seen
	// Refusals audits failed authentications and refused webhooks in
	// aggregate; whoever builds Deps runs its Run (NewRefusals over Auditor
	// if nil, and then only a Flush writes it).
	Refusals *compliance.Refusals
	// StaffMFAMaxAge and StaffTokenMaxLifetime bound the staff tokens of
	// erasure and legal holds (requireFreshMFA); defaults 15m and 90m.
	StaffMFAMaxAge        time.Duration
	StaffTokenMaxLifetime time.Duration
	// Clock judges staff tokens' freshness and dates refusals (the system
	// clock if nil).
	Clock kluis.Clock

	// Hosted keeps the hosted pages' page and form tokens; nil leaves the
	// pages out (docs/HOSTED.md). PublicURL is the public listener's
	// origin as browsers reach it (KLUIS_PUBLIC_URL): the pages' URLs
	// start with it and their forms must come from it. Origins are the
	// apps' browser origins (KLUIS_APP_ORIGINS); HostedPageTTL bounds
	// page tokens (hosted.DefaultTTL if zero). PlaidLink is where the
	// Plaid step loads Plaid Link's script (Plaid's own if empty).
	Hosted        *hosted.Store
	PublicURL     string
	Origins       Origins
	HostedPageTTL time.Duration
	PlaidLink     PlaidLink

	metrics *httpMetrics
	// testRoutes, set only by tests in this package, adds test-only routes
	// under /v1 (routes.go).
	testRoutes func(v1 *echo.Group)

	// Apps are the apps in force: compliance routes that name a subject
	// resolve `?app=` against them. Nil means one app, kluis.DefaultApp,
	// with no event endpoints.
	Apps *apps.Registry
	// OnReplay, if set, is called after an event replay commits (the event
	// worker's Wake, so that the replay goes out at once).
	OnReplay func()

	// MACs keys the Idempotency-Key rows (idempotency.SystemKey);
	// without it, a POST with an Idempotency-Key answers 503.
	MACs MACer
}

func (d *Deps) defaults() {
	if d.RequestTimeout == 0 {
		d.RequestTimeout = 10 * time.Second
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	if d.metrics == nil {
		d.metrics = newHTTPMetrics(d.Registry)
	}
	if d.RateLimiter == nil {
		d.RateLimiter = ratelimit.NewMemory(0)
	}
	if d.RateLimits == nil {
		l := DefaultRateLimits()
		d.RateLimits = &l
	}
	if d.IdempotencyTTL < 24*time.Hour {
		d.IdempotencyTTL = 24 * time.Hour
	}
	if d.idem == nil && d.DB != nil {
		d.idem = idempotency.NewStore(d.DB)
	}
	if d.Clock == nil {
		d.Clock = kluis.SystemClock{}
	}
	if d.Apps == nil {
		d.Apps = apps.Static(apps.None())
	}
	if d.Reveal == nil && d.Vault != nil {
		d.Reveal = d.newReveal()
	}
	if d.Refusals == nil {
		d.Refusals = compliance.NewRefusals(d.Auditor, compliance.RefusalOptions{Clock: d.Clock, Logger: d.Logger})
	}
	if d.StaffMFAMaxAge <= 0 {
		d.StaffMFAMaxAge = DefaultStaffMFAMaxAge
	}
	if d.StaffTokenMaxLifetime <= 0 {
		d.StaffTokenMaxLifetime = DefaultStaffTokenMaxLifetime
	}
}

// base builds an echo instance with kluis's middleware in its order:
// request id first (everything after can name it), then headers, logging and
// metrics, panics, the per-address rate limit (public listener only, before
// any authentication), the deadline, and the body rules (JSON, 1 MiB).
func (d *Deps) base(listener string, tls bool) *echo.Echo {
	d.defaults()
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(d.Logger)
	e.IPExtractor = ipExtractor(d.TrustedProxies)
	e.Use(withRequestID, secureHeaders(tls), accessLog(d.Logger, listener, d.metrics),
		recoverPanics(d.Logger), d.limitAddress(listener), withDeadline(d.RequestTimeout), requireJSON, limitBody)
	return e
}

// ipExtractor believes X-Forwarded-For only from trusted proxies; with none
// configured the peer address is the client. echo's default would believe
// the header from anyone, which would make per-address limits useless.
func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(prefixToIPNet(p)))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
