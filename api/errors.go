package api

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
)

// Extra codes the HTTP layer itself produces.
const (
	eMethodNotAllowed = "method_not_allowed"
)

// statusOf is the one table from error code to HTTP status, every feature's
// codes included; a code not in it is a 500.
var statusOf = map[string]int{
	kluis.EInvalid:          http.StatusBadRequest,
	kluis.EUnauthenticated:  http.StatusUnauthorized,
	kluis.EForbidden:        http.StatusForbidden,
	kluis.ENotFound:         http.StatusNotFound,
	eMethodNotAllowed:       http.StatusMethodNotAllowed,
	kluis.EGone:             http.StatusGone,
	kluis.EConflict:         http.StatusConflict,
	kluis.ETooLarge:         http.StatusRequestEntityTooLarge,
	kluis.EUnsupportedMedia: http.StatusUnsupportedMediaType,
	kluis.EUnprocessable:    http.StatusUnprocessableEntity,
	kluis.ERateLimited:      http.StatusTooManyRequests,
	kluis.EUnavailable:      http.StatusServiceUnavailable,
	kluis.EInternal:         http.StatusInternalServerError,
	kluis.ESubjectErasing:   http.StatusConflict,
	EMFAStale:               http.StatusUnauthorized,

	// Idempotency keys (idempotency.go).
	EIdempotencyKeyReused: http.StatusUnprocessableEntity,
	EIdempotencyKeyInUse:  http.StatusConflict,

	// The vault. A pointer and a credential that disagree: 500 internal,
	// reason integrity (docs/SECURITY.md, "Reveal and a database writer"). A credential whose owner
	// withdrew consent: 410 gone (credential_revoked).
	vault.EIntegrity:            http.StatusInternalServerError,
	vault.CodeCredentialRevoked: http.StatusGone,

	// Compliance.
	compliance.ELegalHold: http.StatusConflict,

	// Bank linking.
	banklink.CodeInvalidCredentials:    http.StatusUnprocessableEntity,
	banklink.CodeInvalidToken:          http.StatusUnprocessableEntity,
	banklink.CodeProductNotSupported:   http.StatusUnprocessableEntity,
	banklink.CodeItemLoginRequired:     http.StatusConflict,
	banklink.CodeLinkSessionClosed:     http.StatusConflict,
	banklink.CodeInstitutionDown:       http.StatusServiceUnavailable,
	banklink.CodeBadSignature:          http.StatusUnauthorized,
	banklink.CodeWebhookKeyUnavailable: http.StatusServiceUnavailable,
	// Provider errors (docs/PLAID.md): what the user did not share is
	// theirs to fix in update mode (422 access_not_granted, no_accounts); a
	// product still being prepared, and a provider that refused kluis's own
	// request, are 503 (reasons product_not_ready, provider_error): never a
	// 500.
	banklink.CodeAccessNotGranted: http.StatusUnprocessableEntity,
	banklink.CodeNoAccounts:       http.StatusUnprocessableEntity,
	banklink.CodeProductNotReady:  http.StatusServiceUnavailable,
	banklink.CodeProviderError:    http.StatusServiceUnavailable,
	// A Stitch token kluis lost (issue 15; docs/STITCH.md): the user must
	// link again.
	banklink.CodeItemRelinkRequired: http.StatusConflict,

	// Verification. A locked account is a conflict with its state (409, its
	// own code); an account number that failed too often across users is a
	// rate limit (429 rate_limited, the cause in error.reason).
	verification.CodeMismatch:                 http.StatusUnprocessableEntity,
	verification.CodeInstantUnsupported:       http.StatusUnprocessableEntity,
	verification.CodeMicroDepositsUnavailable: http.StatusUnprocessableEntity,
	// Bank account verification of an account it cannot check (issue 15).
	verification.CodeBankVerificationUnavailable: http.StatusUnprocessableEntity,
	verification.CodeLocked:                      http.StatusConflict,
	verification.CodeNumberVelocity:              http.StatusTooManyRequests,
}

// baseCode is the code the contract (api/openapi.yaml) gives each status.
var baseCode = map[int]string{
	http.StatusBadRequest: kluis.EInvalid, http.StatusUnauthorized: kluis.EUnauthenticated,
	http.StatusForbidden: kluis.EForbidden, http.StatusNotFound: kluis.ENotFound, http.StatusGone: kluis.EGone,
	http.StatusMethodNotAllowed: eMethodNotAllowed, http.StatusRequestEntityTooLarge: kluis.ETooLarge,
	http.StatusUnsupportedMediaType: kluis.EUnsupportedMedia, http.StatusTooManyRequests: kluis.ERateLimited,
	http.StatusInternalServerError: kluis.EInternal, http.StatusServiceUnavailable: kluis.EUnavailable,
}

// bodyCode keeps the contract's one code per status: the contract allows more
// specific codes only beside 409 and 422 (legal_hold,
// verification_mismatch, ...). Elsewhere a specific code (a webhook's
// bad_signature, a bank's institution_down) is kept in error.reason, and
// error.code is the status's own, so that a client matching on code sees
// what the contract promised.
func bodyCode(code string, status int, fields map[string]any) (string, map[string]any) {
	base, ok := baseCode[status]
	if !ok || code == base {
		return code, fields
	}
	out := make(map[string]any, len(fields)+1)
	for k, v := range fields {
		out[k] = v
	}
	out["reason"] = code
	return base, out
}

// retryAfterSeconds is what a 503 tells clients to wait.
const retryAfterSeconds = 5

// errorBody is the contract's error shape (api/openapi.yaml, Error).
type errorBody struct {
	Error map[string]any `json:"error"`
}

// errorHandler is echo's HTTPErrorHandler: every error leaves kluis through
// here, as JSON in the contract's shape, with the request id. Only internal
// errors and unavailability are logged with their cause; the body never
// carries a cause, a stack trace or SQL.
func errorHandler(logger *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		code, message, fields := classify(err)
		status, ok := statusOf[code]
		if !ok {
			status = http.StatusInternalServerError
		}
		code, fields = bodyCode(code, status, fields)
		rid := requestID(c)
		if status >= 500 {
			logger.ErrorContext(c.Request().Context(), "request failed",
				"request_id", rid, "code", code, "route", c.Path(), "cause", causeOf(err))
		}
		h := c.Response().Header()
		switch status {
		case http.StatusServiceUnavailable:
			h.Set("Retry-After", strconv.Itoa(retryAfterSeconds))
		case http.StatusTooManyRequests:
			if ra, ok := fields["retry_after_seconds"].(int); ok {
				h.Set("Retry-After", strconv.Itoa(ra))
			}
		}
		body := map[string]any{"code": code, "message": message, "request_id": rid}
		for k, v := range fields {
			if _, reserved := body[k]; !reserved {
				body[k] = v
			}
		}
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(status)
			return
		}
		_ = c.JSON(status, errorBody{Error: body})
	}
}

// causeOf describes what lies under err for the log: kluis.Error hides its
// cause from Error() (so it cannot leak into a body), but an operator needs
// it. The logger's redaction layer still scrubs it.
func causeOf(err error) string {
	var ke *kluis.Error
	if errors.As(err, &ke) {
		if inner := ke.Unwrap(); inner != nil {
			return err.Error() + ": " + causeOf(inner)
		}
	}
	return err.Error()
}

// classify turns any error into (code, safe message, extra fields).
func classify(err error) (string, string, map[string]any) {
	var ke *kluis.Error
	if errors.As(err, &ke) {
		return ke.Code, ke.Message, ke.Fields
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		return fromHTTPStatus(he.Code)
	}
	return kluis.EInternal, "internal error", nil
}

// fromHTTPStatus maps the errors echo raises itself (no route, wrong method,
// body too large) onto the contract's codes, with messages of our own rather
// than echo's.
func fromHTTPStatus(status int) (string, string, map[string]any) {
	switch status {
	case http.StatusNotFound:
		return kluis.ENotFound, "not found", nil
	case http.StatusMethodNotAllowed:
		return eMethodNotAllowed, "method not allowed", nil
	case http.StatusRequestEntityTooLarge:
		return kluis.ETooLarge, "request body is larger than 1 MiB", nil
	case http.StatusUnsupportedMediaType:
		return kluis.EUnsupportedMedia, "request body must be application/json", nil
	case http.StatusUnauthorized:
		return kluis.EUnauthenticated, "authentication required", nil
	case http.StatusForbidden:
		return kluis.EForbidden, "forbidden", nil
	case http.StatusBadRequest:
		return kluis.EInvalid, "invalid request", nil
	case http.StatusServiceUnavailable:
		return kluis.EUnavailable, "service unavailable, try again later", nil
	case http.StatusTooManyRequests:
		return kluis.ERateLimited, "too many requests", nil
	}
	return kluis.EInternal, "internal error", nil
}
