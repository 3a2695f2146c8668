package api

import (
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api/ratelimit"
)

// Operations with limits of their own (RateLimits.Operations), named by
// method and route template.
const (
	OpLinkSession          = "POST /v1/link/sessions"
	OpTokenExchange        = "POST /v1/link/sessions/:id/exchange" // #nosec G101 -- a route, not a credential
	OpVerificationConfirm  = "POST /v1/verifications/:id/confirm"
	OpReveal               = "POST /internal/v1/credentials/:ref/reveal"
	OpManualAccount        = "POST /v1/accounts"
	OpVerificationStart    = "POST /v1/accounts/:id/verifications"
	retryAfterSecondsField = "retry_after_seconds"
)

// RateLimits are the limits kluis enforces. A zero Limit turns one off.
type RateLimits struct {
	// Address limits every request to the public listener per client
	// address (echo's RealIP, which believes X-Forwarded-For only from
	// TrustedProxies). It is checked before authentication, so it also
	// bounds token guessing.
	Address ratelimit.Limit
	// IPv6Prefix is how many leading bits of an IPv6 address the address
	// limit counts by (0: ratelimit.DefaultIPv6Prefix, 64). One subscriber commonly
	// holds a whole /64 (or more) and may send from any address in it, so
	// counting per /128 would give one client 2^64 budgets. IPv4 addresses,
	// IPv4-mapped IPv6 ones included, count per address.
	IPv6Prefix int
	// Subject limits every /v1 request per user (the token's sub).
	Subject ratelimit.Limit
	// Service limits every internal request per calling service.
	Service ratelimit.Limit
	// Operations are tighter limits on sensitive routes, keyed by
	// "METHOD /route/template" (the Op constants) and counted per caller
	// (user or service) on top of the limits above.
	Operations map[string]ratelimit.Limit
}

// DefaultRateLimits leave room for an app's and a service's steady traffic
// (reveal: 2,000 a second per service, the contract asks for at least 1,000; one
// address may front many users behind a NAT) and stop sustained guessing on
// the sensitive routes. Guessing micro-deposits is bounded by the
// verification's own attempts (3) as well; the confirm limit is the second
// line, not the first.
func DefaultRateLimits() RateLimits {
	return RateLimits{
		Address: ratelimit.Limit{Rate: 6000, Period: time.Minute, Burst: 6000},
		Subject: ratelimit.Limit{Rate: 600, Period: time.Minute, Burst: 600},
		Service: ratelimit.Limit{Rate: 10000, Period: time.Second, Burst: 10000},
		Operations: map[string]ratelimit.Limit{
			OpLinkSession:         {Rate: 60, Period: time.Minute, Burst: 60},
			OpTokenExchange:       {Rate: 60, Period: time.Minute, Burst: 60},
			OpVerificationConfirm: {Rate: 60, Period: time.Minute, Burst: 60},
			OpReveal:              {Rate: 2000, Period: time.Second, Burst: 2000},
			// Each manual account and each start is a new chance to guess
			// micro-deposits (and sends real deposits): 20 an hour each.
			OpManualAccount:     {Rate: 20, Period: time.Hour, Burst: 20},
			OpVerificationStart: {Rate: 20, Period: time.Hour, Burst: 20},
		},
	}
}

// limitAddress counts every public request against its client's address
// (an IPv6 client by its prefix, RateLimits.IPv6Prefix).
// The internal listener's callers are services, limited per service after
// their certificate is checked (limitCaller).
func (d *Deps) limitAddress(listener string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		if listener != "public" {
			return next
		}
		return func(c echo.Context) error {
			ip := c.RealIP()
			if ip == "" {
				ip = "unknown"
			}
			if err := d.allow(c, "address", "address", ratelimit.AddressKey(ip, d.RateLimits.IPv6Prefix), d.RateLimits.Address); err != nil {
				return err
			}
			return next(c)
		}
	}
}

// limitCaller counts an authenticated request against its caller (the user
// on /v1, the service on the internal listener) and, on a sensitive route,
// against the caller's count for that operation.
func (d *Deps) limitCaller(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		kind, who, limit := "user", Subject(c), d.RateLimits.Subject
		if who == "" {
			kind, who, limit = "service", serviceName(c), d.RateLimits.Service
		}
		if err := d.allow(c, kind, kind, who, limit); err != nil {
			return err
		}
		op := operationOf(c)
		if l, ok := d.RateLimits.Operations[op]; ok {
			if err := d.allow(c, "op:"+op, "op:"+op+":"+kind, who, l); err != nil {
				return err
			}
		}
		return next(c)
	}
}

// allow counts one event for (name, identity) and returns the 429 when the
// limit is spent; either way the answer announces the limit as policy in
// its RateLimit-Policy and RateLimit headers. The identity (an address, a
// subject) reaches the store only as a keyed pseudonym. A limiter that
// cannot answer fails closed with 503; the configured limiter falls back to
// memory instead of failing.
func (d *Deps) allow(c echo.Context, policy, name, identity string, limit ratelimit.Limit) error {
	if limit.IsZero() {
		return nil
	}
	res, err := d.RateLimiter.Allow(c.Request().Context(), name+":"+ratelimit.IdentityKey(d.Pseudonyms, name, identity), limit)
	if err != nil {
		return kluis.Unavailable("rate limiter", err)
	}
	announceLimit(c, policy, limit, res)
	if res.Allowed {
		return nil
	}
	return kluis.Errorf(kluis.ERateLimited, "too many requests, try again later").
		With(retryAfterSecondsField, ratelimit.RetryAfterSeconds(res.RetryAfter))
}
