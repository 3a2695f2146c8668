package api

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/compliance"
)

// Authenticator verifies bearer tokens. User returns the token's subject;
// Staff returns the staff member's id. Both return ErrBadToken (wrapped) for
// a token that does not verify, and Staff returns ErrNotStaff for a valid
// token that lacks the compliance role or MFA. Reasons in the wrapped error
// are safe to log and audit; they never hold the token.
type Authenticator interface {
	User(ctx context.Context, raw string) (subject string, err error)
	Staff(ctx context.Context, raw string) (staffID string, err error)
}

// Errors an Authenticator returns.
var (
	ErrBadToken = errors.New("token does not verify")
	ErrNotStaff = errors.New("token lacks the compliance role or MFA")
)

const (
	ctxSubject = "kluis.subject"
	ctxService = "kluis.service"
	ctxStaff   = "kluis.staff"
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

// authFailure records a failed authentication or authorization in the audit
// log (without the token) and returns the error for the caller. If the entry
// cannot be written the request fails closed with 503.
func (d *Deps) authFailure(c echo.Context, code, reason string, actorKind, actor string) error {
	details := map[string]any{"reason": reason, "route": routeOf(c), "method": c.Request().Method}
	if ip := c.RealIP(); ip != "" {
		details["client"] = d.Pseudonyms.Pseudonym("client_ip", ip)
	}
	action := "authn.failed"
	if code == kluis.EForbidden {
		action = "authz.denied"
	}
	err := d.Auditor.Record(c.Request().Context(), compliance.Entry{
		ActorKind: actorKind, Actor: actor, Action: action, Outcome: compliance.OutcomeDenied,
		RequestID: requestID(c), Details: details,
	})
	if err != nil {
		return err
	}
	if code == kluis.EForbidden {
		return kluis.Errorf(kluis.EForbidden, "forbidden")
	}
	c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="kluis"`)
	return kluis.Errorf(kluis.EUnauthenticated, "a valid bearer token is required")
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
			return d.authFailure(c, kluis.EUnauthenticated, why, compliance.ActorAnonymous, "")
		}
		sub, err := d.Auth.User(c.Request().Context(), raw)
		if err != nil {
			return d.authFailure(c, kluis.EUnauthenticated, safeReason(err), compliance.ActorAnonymous, "")
		}
		c.Set(ctxSubject, sub)
		return next(c)
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

// ServiceFromCert names the service a verified client certificate belongs
// to: the path of its spiffe:// URI SAN (spiffe://<trust domain>/<service>),
// or else its Common Name. When trustDomain is set, a SPIFFE ID from any other
// trust domain names no service at all (""), so that a certificate the CA
// issued for another domain cannot borrow a service's name.
func ServiceFromCert(cert *x509.Certificate, trustDomain string) string {
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" || u.Host == "" {
			continue
		}
		if trustDomain != "" && !strings.EqualFold(u.Host, trustDomain) {
			return ""
		}
		if name := strings.Trim(u.Path, "/"); name != "" {
			return name
		}
	}
	return cert.Subject.CommonName
}

// requireService identifies the internal service from its verified client
// certificate (the TLS layer has already refused connections without one, or
// with one from another CA) and refuses services the policy does not name.
func (d *Deps) requireService(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		st := c.Request().TLS
		if st == nil || len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
			return d.authFailure(c, kluis.EUnauthenticated, "no verified client certificate", compliance.ActorAnonymous, "")
		}
		name := ServiceFromCert(st.PeerCertificates[0], d.TrustDomain)
		if !d.Policy.Knows(name) {
			return d.authFailure(c, kluis.EForbidden, "service not in the policy", compliance.ActorService, clip(name))
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
			return d.authFailure(c, kluis.EForbidden, "service may not carry compliance requests", compliance.ActorService, svc)
		}
		raw, why := bearer(c)
		if why != "" {
			return d.authFailure(c, kluis.EUnauthenticated, why, compliance.ActorService, svc)
		}
		staff, err := d.Auth.Staff(c.Request().Context(), raw)
		switch {
		case errors.Is(err, ErrNotStaff):
			return d.authFailure(c, kluis.EForbidden, safeReason(err), compliance.ActorService, svc)
		case err != nil:
			return d.authFailure(c, kluis.EUnauthenticated, safeReason(err), compliance.ActorService, svc)
		}
		c.Set(ctxStaff, staff)
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
