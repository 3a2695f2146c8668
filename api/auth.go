package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/compliance"
)

// Authenticator verifies bearer tokens. User returns the token's subject;
// Staff returns the staff member's id and the token's times. Both return
// ErrBadToken (wrapped) for
// a token that does not verify, and Staff returns ErrNotStaff for a valid
// token that lacks the compliance role or MFA. Reasons in the wrapped error
// are safe to log and audit; they never hold the token.
type Authenticator interface {
	User(ctx context.Context, raw string) (subject string, err error)
	Staff(ctx context.Context, raw string) (StaffToken, error)
}

// StaffToken is what kluis uses of a verified staff token.
type StaffToken struct {
	// ID is sub: the staff member.
	ID string
	// AuthTime is auth_time, when the staff member last authenticated (with
	// MFA, since amr holds mfa); zero when the token does not say.
	AuthTime time.Time
	// IssuedAt and ExpiresAt are iat and exp (IssuedAt zero when absent).
	IssuedAt, ExpiresAt time.Time
}

// Errors an Authenticator returns.
var (
	ErrBadToken = errors.New("token does not verify")
	ErrNotStaff = errors.New("token lacks the compliance role or MFA")
)

const (
	ctxSubject    = "kluis.subject"
	ctxService    = "kluis.service"
	ctxStaff      = "kluis.staff"
	ctxStaffToken = "kluis.staff_token"
)

// Subject returns the data subject (the user token's sub) of a /v1 request.
func Subject(c echo.Context) string { s, _ := c.Get(ctxSubject).(string); return s }

// serviceName returns the internal service that made the request, if any.
func serviceName(c echo.Context) string { s, _ := c.Get(ctxService).(string); return s }

// StaffID returns the compliance staff member of a /compliance request.
func StaffID(c echo.Context) string { s, _ := c.Get(ctxStaff).(string); return s }

// bearer extracts the token from the Authorization header. Tokens are
// accepted there only: a token in a query string ends up in proxy and
// browser logs, so a request that carries one is refused outright.
func bearer(c echo.Context) (string, string) {
	q := c.Request().URL.Query()
	if q.Has("access_token") || q.Has("token") || q.Has("id_token") {
		return "", "token in the query string"
	}
	h := c.Request().Header.Get(echo.HeaderAuthorization)
	scheme, token, ok := strings.Cut(h, " ")
	if h == "" {
		return "", "no Authorization header"
	}
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", "Authorization is not a bearer token"
	}
	return strings.TrimSpace(token), ""
}

// authFailure counts a failed authentication or a refusal at the door in
// the aggregated audit log (d.Refusals: one entry per source address and
// minute, never the token) and returns the error for the caller. Counting
// costs no database write, so a flood of bad tokens cannot flood the audit
// log or wait on it. code is kluis.EUnauthenticated, kluis.EForbidden or
// EMFAStale; a 403 says only "forbidden", whatever the reason.
func (d *Deps) authFailure(c echo.Context, code, reason string, actorKind, actor string) error {
	kind := compliance.RefusalAuthn
	if code == kluis.EForbidden {
		kind = compliance.RefusalAuthz
	}
	d.noteRefusal(c, kind, reason, actorKind, actor)
	switch code {
	case kluis.EForbidden:
		return kluis.Errorf(kluis.EForbidden, "forbidden")
	case EMFAStale:
		// RFC 9470: the client should have the staff member authenticate again.
		c.Response().Header().Set(echo.HeaderWWWAuthenticate,
			fmt.Sprintf(`Bearer realm="kluis", error="insufficient_user_authentication", max_age=%d`, int(d.StaffMFAMaxAge.Seconds())))
		return kluis.Errorf(EMFAStale, "a staff token with a recent multi-factor authentication is required")
	}
	c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="kluis"`)
	return kluis.Errorf(kluis.EUnauthenticated, "a valid bearer token is required")
}

// noteRefusal counts one refused request from this request's client
// address. actor is what the caller claimed to be, clipped; reason must be
// a fixed category.
func (d *Deps) noteRefusal(c echo.Context, kind, reason, actorKind, actor string) {
	if actor != "" {
		actor = actorKind + ":" + clip(actor)
	}
	d.Refusals.Note(compliance.Refusal{
		Source: c.RealIP(), Kind: kind, Reason: reason,
		// The method is the caller's choice (any token): clipped like the actor.
		Route: clip(c.Request().Method + " " + routeOf(c)), Actor: actor, RequestID: requestID(c),
	})
}

func routeOf(c echo.Context) string {
	if p := c.Path(); p != "" {
		return p
	}
	return "unmatched"
}

// requireUser authenticates /v1 requests with a user token.
func (d *Deps) requireUser(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		raw, why := bearer(c)
		if why != "" {
			return d.authFailure(c, kluis.EUnauthenticated, why, audit.ActorAnonymous, "")
		}
		sub, err := d.Auth.User(c.Request().Context(), raw)
		if err != nil {
			return d.authFailure(c, kluis.EUnauthenticated, safeReason(err), audit.ActorAnonymous, "")
		}
		c.Set(ctxSubject, sub)
		d.touch(c, sub)
		return next(c)
	}
}

// touch records that the user called kluis, for the retention of dormant
// subjects. A failure is logged, not answered: the request's own work meets
// the same database, and the next request tries again.
func (d *Deps) touch(c echo.Context, sub string) {
	if d.DB == nil {
		return
	}
	ctx := c.Request().Context()
	if err := d.seen.Touch(ctx, d.DB.Pool, sub, time.Now()); err != nil {
		d.Logger.WarnContext(ctx, "recording the user's activity failed", "request_id", requestID(c), "cause", err.Error())
	}
}

// safeReason keeps only the first line of an authenticator's error, capped,
// for the audit log.
func safeReason(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// requireService identifies the internal service from its verified client
// certificate (the TLS layer has already refused connections without one, or
// with one from another CA) by the policy in force: a revoked certificate,
// an identity that is not exactly what the service identity rules allow (docs/SECURITY.md,
// "Borrowed service identities"),
// and a service the policy does not name are all 403, alike to the caller.
// The checks run on every request, not once per connection, so a
// revocation reaches connections that are already open.
func (d *Deps) requireService(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		st := c.Request().TLS
		if st == nil || len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
			return d.authFailure(c, kluis.EUnauthenticated, "no verified client certificate", audit.ActorAnonymous, "")
		}
		leaf := st.PeerCertificates[0]
		name, refusal := d.Policy.Identify(leaf, st.VerifiedChains, d.TrustDomain)
		if refusal != "" {
			// The certificate's serial names it for the investigation (and
			// for revoking it); what it claimed is not repeated.
			return d.authFailure(c, kluis.EForbidden, refusal, "serial", leaf.SerialNumber.Text(16))
		}
		c.Set(ctxService, name)
		return next(c)
	}
}

// requireStaff guards compliance routes: the calling service must be a
// compliance console in the policy, and the request must carry a staff token
// with the compliance role and MFA.
func (d *Deps) requireStaff(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		svc := serviceName(c)
		if !d.Policy.MayCarryCompliance(svc) {
			return d.authFailure(c, kluis.EForbidden, "service may not carry compliance requests", audit.ActorService, svc)
		}
		raw, why := bearer(c)
		if why != "" {
			return d.authFailure(c, kluis.EUnauthenticated, why, audit.ActorService, svc)
		}
		staff, err := d.Auth.Staff(c.Request().Context(), raw)
		switch {
		case errors.Is(err, ErrNotStaff):
			return d.authFailure(c, kluis.EForbidden, safeReason(err), audit.ActorService, svc)
		case err != nil:
			return d.authFailure(c, kluis.EUnauthenticated, safeReason(err), audit.ActorService, svc)
		}
		c.Set(ctxStaff, staff.ID)
		c.Set(ctxStaffToken, staff)
		return next(c)
	}
}

// clip bounds a caller-chosen string before it is audited.
func clip(s string) string {
	if len(s) > 128 {
		return s[:128]
	}
	return s
}

// EMFAStale is the reason of a 401 to a staff token that is not fresh
// enough for the action (401, error.reason mfa_stale; docs/SECURITY.md).
const EMFAStale = "mfa_stale"

// Defaults of Deps.StaffMFAMaxAge and Deps.StaffTokenMaxLifetime.
const (
	DefaultStaffMFAMaxAge        = 15 * time.Minute
	DefaultStaffTokenMaxLifetime = 90 * time.Minute
	// staffClockSkew forgives an auth_time this far in the future (the
	// identity provider's clock ahead of kluis's).
	staffClockSkew = 30 * time.Second
)

// freshMFARoutes are the compliance actions that change something:
// requesting, approving, rejecting, cancelling or completing (with
// exceptions) an erasure, placing or lifting a legal hold, replaying an
// event (method and route template). A route
// added for such an action belongs here.
var freshMFARoutes = map[string]bool{
	"POST /compliance/v1/erasure-requests":              true,
	"POST /compliance/v1/erasure-requests/:id/approve":  true,
	"POST /compliance/v1/erasure-requests/:id/reject":   true,
	"POST /compliance/v1/erasure-requests/:id/cancel":   true,
	"POST /compliance/v1/erasure-requests/:id/complete": true,
	"POST /compliance/v1/legal-holds":                   true,
	"DELETE /compliance/v1/legal-holds/:id":             true,
	// The complete export opens every sealed record of a person.
	"POST /compliance/v1/subjects/:id/export": true,
	// A replay sends an app's events out again: a change made on the
	// app's behalf, so the staff member must have authenticated lately.
	"POST /compliance/v1/events/:id/replay": true,
}

// requireFreshMFA guards freshMFARoutes: beyond requireStaff, the staff
// member must have authenticated within StaffMFAMaxAge (auth_time), and the
// token must live no longer than StaffTokenMaxLifetime (exp - iat), so that
// a token lifted from a console cannot erase anyone hours later. Otherwise
// 401 with error.reason mfa_stale. It runs after requireStaff and before
// the Idempotency-Key layer, so that a refusal is never stored and replayed
// to the retry with a fresh token.
func (d *Deps) requireFreshMFA(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !freshMFARoutes[c.Request().Method+" "+c.Path()] {
			return next(c)
		}
		tok, ok := c.Get(ctxStaffToken).(StaffToken)
		if !ok {
			return d.authFailure(c, kluis.EUnauthenticated, "no staff token", audit.ActorService, serviceName(c))
		}
		if why := staleness(tok, d.Clock.Now(), d.StaffMFAMaxAge, d.StaffTokenMaxLifetime); why != "" {
			return d.authFailure(c, EMFAStale, why, audit.ActorStaff, tok.ID)
		}
		return next(c)
	}
}

// staleness says why tok is not fresh enough at now, or "".
func staleness(tok StaffToken, now time.Time, maxAge, maxLifetime time.Duration) string {
	switch {
	case tok.AuthTime.IsZero():
		return "staff token has no auth_time"
	case tok.AuthTime.After(now.Add(staffClockSkew)):
		return "staff token auth_time is in the future"
	case now.Sub(tok.AuthTime) > maxAge:
		return "staff authentication too old"
	case tok.IssuedAt.IsZero():
		return "staff token has no iat"
	case tok.ExpiresAt.Sub(tok.IssuedAt) > maxLifetime:
		return "staff token lifetime too long"
	}
	return ""
}
