package api

import (
	"math"
	"time"

	"github.com/dunglas/httpsfv"
	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis/api/ratelimit"
)

// The rate-limit header fields of the IETF draft
// (draft-ietf-httpapi-ratelimit-headers, -09 and later): RateLimit-Policy
// names each limit an answer was counted against with its quota `q` per
// window `w` seconds, and RateLimit gives each one's state, `r` requests
// left and `t` seconds until it is whole again. Both are Structured Field
// Lists (RFC 9651) of a quoted policy name with parameters:
//
//	RateLimit-Policy: "address";q=6000;w=60, "user";q=600;w=60
//	RateLimit: "address";r=5999;t=1, "user";r=599;t=1
const (
	headerRateLimitPolicy = "RateLimit-Policy"
	headerRateLimit       = "RateLimit"
)

// limitsAnnounced is the echo context key of the request's limits so far.
const limitsAnnounced = "kluis.ratelimits"

// announced is what one request has been counted against, in order.
type announced struct {
	policies, states httpsfv.List
}

// announceLimit adds policy, with its limit and the limiter's answer, to
// the request's RateLimit-Policy and RateLimit headers. A request passes
// several limits (its address, its user or service, a sensitive
// operation); each is one member of both lists.
func announceLimit(c echo.Context, policy string, limit ratelimit.Limit, res ratelimit.Result) {
	a, _ := c.Get(limitsAnnounced).(*announced)
	if a == nil {
		a = &announced{}
		c.Set(limitsAnnounced, a)
	}
	p := httpsfv.NewItem(policy)
	p.Params = httpsfv.NewParams()
	p.Params.Add("q", int64(limit.Rate))
	p.Params.Add("w", wholeSeconds(limit.Period))
	st := httpsfv.NewItem(policy)
	st.Params = httpsfv.NewParams()
	st.Params.Add("r", int64(res.Remaining))
	st.Params.Add("t", wholeSeconds(res.Reset))
	a.policies = append(a.policies, p)
	a.states = append(a.states, st)
	h := c.Response().Header()
	// Marshal fails only on values httpsfv cannot encode (a policy name
	// with a character outside printable ASCII); kluis's names are fixed
	// route and kind names, so a failure leaves the headers out rather than
	// failing the request.
	if v, err := httpsfv.Marshal(a.policies); err == nil {
		h.Set(headerRateLimitPolicy, v)
	}
	if v, err := httpsfv.Marshal(a.states); err == nil {
		h.Set(headerRateLimit, v)
	}
}

// wholeSeconds rounds d up to whole seconds (the headers carry integers):
// a window of 1.5 s is announced as 2, and a reset under a second as 1,
// never as a 0 that would tell a client the quota is whole already.
func wholeSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(math.Ceil(d.Seconds()))
}
