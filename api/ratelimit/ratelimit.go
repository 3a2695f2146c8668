// Package ratelimit counts requests per key against a rate: in memory for a
// single instance, in Redis (GCRA, through redis_rate) when instances share
// one limit, and a fallback that keeps limiting in memory while Redis is
// unreachable. The api package decides what a key is (a client address, a
// subject, a service, an operation); AddressKey and IdentityKey turn an
// address and an identity into keys, so that identities reach the store
// only as keyed pseudonyms. The echo middleware is api's
// (api/middleware_ratelimit.go).
package ratelimit

import (
	"context"
	"time"
)

// Limit allows Rate events per Period, with bursts of up to Burst events.
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// IsZero reports whether l sets no limit (the operation is not limited).
func (l Limit) IsZero() bool { return l.Rate <= 0 || l.Period <= 0 }

// Result is the answer for one event.
type Result struct {
	Allowed bool
	// RetryAfter is how long to wait before the next event is allowed;
	// zero when Allowed.
	RetryAfter time.Duration
	// Remaining is how many more events the limit allows now (after this
	// one), and Reset how long until it is whole again (every event of a
	// burst allowed): the `r` and `t` of the RateLimit header.
	Remaining int
	Reset     time.Duration
}

// Limiter counts one event for key under limit. key is opaque (the caller
// hashes identities into it) and names its limit too, so that one key is
// always counted under one limit. Allow returns an error only when its store
// cannot answer (Redis unreachable); Memory never fails.
type Limiter interface {
	Allow(ctx context.Context, key string, limit Limit) (Result, error)
}

// RetryAfterSeconds rounds a wait up to whole seconds, at least 1, for the
// Retry-After header.
func RetryAfterSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}
