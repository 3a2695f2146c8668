package api

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api/jwtauth"
	"github.com/kluis-dev/kluis/apps"
)

// JWTAuthenticator is the Authenticator kluis runs with: user and staff
// tokens verified by a jwtauth.Verifier. With Users set, a user token is
// first matched to its app (by issuer and audience) and verified with that
// app's settings; without, every user token is of the default app and is
// verified by Verifier's user audience.
type JWTAuthenticator struct {
	Verifier *jwtauth.Verifier
	Users    *UserVerifiers
}

// User verifies a user token and returns its user key (kluis.UserKey: the
// app and the token's sub).
func (a JWTAuthenticator) User(ctx context.Context, raw string) (string, error) {
	if a.Users != nil {
		return a.Users.verify(ctx, raw)
	}
	claims, err := a.Verifier.VerifyUser(ctx, raw)
	if err != nil {
		return "", fmt.Errorf("%w: %s", ErrBadToken, jwtauth.Reason(err))
	}
	return kluis.UserKey(kluis.DefaultApp, claims.Subject), nil
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

// UserVerifiers verifies the user tokens of every app in force. An app
// without keys of its own shares Shared's (the KLUIS_JWT_JWKS_* keys); an
// app with its own JWKS gets a Verifier from Own, built when the apps are
// loaded (Check), so that an app whose keys cannot be fetched keeps the
// apps file from loading rather than failing its users' requests.
type UserVerifiers struct {
	Apps   *apps.Registry
	Shared *jwtauth.Verifier
	// Own builds the verifier of an app with its own JWKS.
	Own func(apps.JWT) (*jwtauth.Verifier, error)

	mu    sync.Mutex
	byJWT map[apps.JWT]*jwtauth.Verifier
}

// Check builds the verifiers of set's apps (registered with
// apps.Registry.AddCheck).
func (u *UserVerifiers) Check(set *apps.Set) error {
	for _, id := range set.IDs() {
		a, _ := set.App(id)
		if _, err := u.verifierFor(a.JWT); err != nil {
			return fmt.Errorf("app %q: token keys: %w", id, err)
		}
	}
	return nil
}

// verifierFor returns the verifier of one app's JWT settings, building it
// on first use. Verifiers of apps that were removed are kept (their number
// is bounded by the versions of the apps file a process sees).
func (u *UserVerifiers) verifierFor(j apps.JWT) (*jwtauth.Verifier, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if v, ok := u.byJWT[j]; ok {
		return v, nil
	}
	var v *jwtauth.Verifier
	switch {
	case !j.OwnKeys():
		v = u.Shared.ForUsers(j.Issuer, j.Audience)
	case u.Own == nil:
		return nil, errors.New("no way to load an app's own JWKS")
	default:
		var err error
		if v, err = u.Own(j); err != nil {
			return nil, err
		}
	}
	if u.byJWT == nil {
		u.byJWT = map[apps.JWT]*jwtauth.Verifier{}
	}
	u.byJWT[j] = v
	return v, nil
}

// verify matches raw to its app and verifies it with the app's settings.
func (u *UserVerifiers) verify(ctx context.Context, raw string) (string, error) {
	iss, aud, err := jwtauth.Peek(raw)
	if err != nil {
		return "", fmt.Errorf("%w: %s", ErrBadToken, jwtauth.Reason(err))
	}
	app, err := u.Apps.Current().ForToken(iss, aud)
	if err != nil {
		return "", fmt.Errorf("%w: %s", ErrBadToken, err.Error())
	}
	v, err := u.verifierFor(app.JWT)
	if err != nil {
		return "", kluis.Unavailable("token keys", err)
	}
	claims, err := v.VerifyUser(ctx, raw)
	if err != nil {
		return "", fmt.Errorf("%w: %s", ErrBadToken, jwtauth.Reason(err))
	}
	return kluis.UserKey(app.ID, claims.Subject), nil
}
