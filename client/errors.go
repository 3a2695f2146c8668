package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Error is an answer of kluis's outside 2XX, in the contract's error shape
// (`{"error": {"code", "message", "request_id", "reason"?, ...}}`). Code is
// the status's own code, or a more specific one for 409 and 422
// (`legal_hold`, `verification_mismatch`, ...); Reason names the specific
// cause behind a generic code (`credential_revoked` on a 410, `integrity`
// on a 500, `account_number_velocity` on a 429, ...). Match on them with
// errors.As, or with IsCode and IsReason.
type Error struct {
	Status    int
	Code      string
	Reason    string
	Message   string
	RequestID string
	// Field names the request field a 400 is about, where there is one.
	Field string
	// RetryAfter is the answer's Retry-After (429 and 503), zero without.
	RetryAfter time.Duration
	// Fields holds everything else the error carried (attempts_remaining,
	// locked_until, ...), as JSON decoded it.
	Fields map[string]any
}

func (e *Error) Error() string {
	s := fmt.Sprintf("kluis: %d %s", e.Status, e.Code)
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RequestID != "" {
		s += " [" + e.RequestID + "]"
	}
	return s
}

// IsCode reports whether err is a kluis Error with this code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// IsReason reports whether err is a kluis Error with this reason.
func IsReason(err error, reason string) bool {
	var e *Error
	return errors.As(err, &e) && e.Reason == reason
}

// errorFrom reads an answer outside 2XX into an Error. A body that is not
// the contract's shape (a proxy's page) still gives an Error, with the
// status and the status text as its code.
func errorFrom(resp *http.Response, body []byte) *Error {
	e := &Error{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header)}
	var shape struct {
		Error map[string]any `json:"error"`
	}
	if json.Unmarshal(body, &shape) != nil || shape.Error == nil {
		e.Code = http.StatusText(resp.StatusCode)
		return e
	}
	take := func(k string) string {
		v, _ := shape.Error[k].(string)
		delete(shape.Error, k)
		return v
	}
	e.Code, e.Reason, e.Message, e.RequestID, e.Field = take("code"), take("reason"), take("message"), take("request_id"), take("field")
	if len(shape.Error) > 0 {
		e.Fields = shape.Error
	}
	return e
}

// retryAfter reads Retry-After in seconds (kluis sends whole seconds; an
// HTTP date is not used), zero when absent or unreadable.
func retryAfter(h http.Header) time.Duration {
	n, err := strconv.Atoi(h.Get("Retry-After"))
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}
