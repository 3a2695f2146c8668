package jwtauth

import (
	"errors"

	"github.com/kluis-dev/kluis"
)

// The two ways a verification fails. Both are *kluis.Error values, so the api
// package's error table maps them to 401 and 403 without knowing this package,
// and their messages are safe to show because they say nothing of the token.
// Match them with errors.Is.
var (
	// ErrInvalidToken means the token proves nothing: malformed, badly signed,
	// expired, for another audience or issuer, or missing a required claim.
	// Answer 401.
	ErrInvalidToken error = kluis.Errorf(kluis.EUnauthenticated, "missing or invalid bearer token")

	// ErrForbidden means a valid staff token whose holder may not act here: the
	// role compliance or the mfa authentication method is missing. Answer 403.
	ErrForbidden error = kluis.Errorf(kluis.EForbidden, "this token does not allow compliance actions")
)

// reasonError ties one of the sentinels to a fixed reason for the logs. The
// reason is always one of this package's constant strings: never the token,
// a claim's value, or a library's message (which may quote the kid).
type reasonError struct {
	kind   error
	reason string
}

func (e *reasonError) Error() string { return e.kind.Error() + ": " + e.reason }

// Unwrap lets errors.Is find the sentinel and errors.As find the kluis.Error.
func (e *reasonError) Unwrap() error { return e.kind }

func invalid(reason string) error { return &reasonError{kind: ErrInvalidToken, reason: reason} }

func forbidden(reason string) error { return &reasonError{kind: ErrForbidden, reason: reason} }

// Reason returns why verification failed, in words that are safe to log, or
// "" when err did not come from this package.
func Reason(err error) string {
	var r *reasonError
	if errors.As(err, &r) {
		return r.reason
	}
	return ""
}
