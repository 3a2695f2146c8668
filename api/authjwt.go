package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/kluis-dev/kluis/api/jwtauth"
)

// JWTAuthenticator is the Authenticator kluis runs with: user and staff
// tokens verified by a jwtauth.Verifier.
type JWTAuthenticator struct {
	Verifier *jwtauth.Verifier
}

// User verifies a user token and returns its subject.
func (a JWTAuthenticator) User(ctx context.Context, raw string) (string, error) {
	claims, err := a.Verifier.VerifyUser(ctx, raw)
	if err != nil {
		return "", fmt.Errorf("%w: %s", ErrBadToken, jwtauth.Reason(err))
	}
	return claims.Subject, nil
}

// Staff verifies a staff token, its compliance role and MFA, and returns the
// staff member's id and the token's times.
func (a JWTAuthenticator) Staff(ctx context.Context, raw string) (StaffToken, error) {
	claims, err := a.Verifier.VerifyStaff(ctx, raw)
	switch {
	case errors.Is(err, jwtauth.ErrForbidden):
		return StaffToken{}, fmt.Errorf("%w: %s", ErrNotStaff, jwtauth.Reason(err))
	case err != nil:
		return StaffToken{}, fmt.Errorf("%w: %s", ErrBadToken, jwtauth.Reason(err))
	}
	return StaffToken{ID: claims.Subject, AuthTime: claims.AuthTime, IssuedAt: claims.IssuedAt, ExpiresAt: claims.ExpiresAt}, nil
}
