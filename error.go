// Package kluis holds what every part of kluis shares: the error type and its
// codes, identifiers, and the clock. Feature packages build on it; it imports
// nothing of theirs.
package kluis

import (
	"errors"
	"fmt"
)

// Error codes. The api package alone maps them to HTTP statuses; every other
// package speaks only in these.
const (
	EInvalid          = "invalid_request"
	EUnauthenticated  = "unauthenticated"
	EForbidden        = "forbidden"
	ENotFound         = "not_found"
	EConflict         = "conflict"
	ETooLarge         = "too_large"
	EGone             = "gone"
	EUnsupportedMedia = "unsupported_media_type"
	EUnprocessable    = "unprocessable"
	ERateLimited      = "rate_limited"
	EUnavailable      = "unavailable"
	EInternal         = "internal"
	// ESubjectErasing refuses a write for a subject whose approved erasure
	// is running (409): nothing new may appear that the run could miss.
	ESubjectErasing = "subject_erasing"
)

// Error is an error that is safe to show to the caller: its Message must never
// carry a secret, personal data, SQL or a stack. Fields adds named values to the
// error body (for example attempts_remaining).
type Error struct {
	Code    string
	Message string
	Fields  map[string]any
	// cause is kept for logs and errors.Is, never shown to the caller.
	cause error
}

// Error implements error. It returns only the code and the message, which are
// safe to show; the cause stays out of it so that a wrapped driver error cannot
// leak through a careless %v.
func (e *Error) Error() string {
	return fmt.Sprintf("kluis: %s: %s", e.Code, e.Message)
}

// Unwrap gives errors.Is and errors.As access to the cause.
func (e *Error) Unwrap() error { return e.cause }

// Errorf returns an Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an Error with the given code and message that keeps cause for
// logs and errors.Is.
func Wrap(code, message string, cause error) *Error {
	return &Error{Code: code, Message: message, cause: cause}
}

// With returns a copy of e with one more field in its body.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Fields = make(map[string]any, len(e.Fields)+1)
	for k, v := range e.Fields {
		c.Fields[k] = v
	}
	c.Fields[key] = value
	return &c
}

// ErrorCode returns the code of the first Error in err's chain, EInternal for
// any other error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// ErrorMessage returns the message of the first Error in err's chain, or a
// message that says nothing of the cause for any other error.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// ErrUnavailable is the cause kept by errors that mean a dependency (database,
// key provider, bank provider, audit log) cannot do its part right now; callers
// answer 503 with Retry-After.
var ErrUnavailable = errors.New("dependency unavailable")

// Unavailable returns an EUnavailable error naming the dependency, keeping the
// cause for logs.
func Unavailable(dependency string, cause error) *Error {
	return &Error{Code: EUnavailable, Message: dependency + " unavailable, try again later", cause: errors.Join(ErrUnavailable, cause)}
}
