package jwtauth_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/api/jwtauth"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
)

// FuzzVerifyUser feeds arbitrary strings to both verify methods. Whatever
// comes in, they must not panic, must fail only with the package's sentinels
// and loggable reasons that do not echo the input, and must accept nothing
// that breaks the claims' invariants. The seeds add, to the corpus under
// testdata/fuzz, this process's good and malicious tokens, which are signed
// with keys that exist only for this run.
func FuzzVerifyUser(f *testing.F) {
	v := fileVerifier(f)
	f.Add(jwttest.Token(f))
	f.Add(jwttest.Token(f, jwttest.WithKey(jwttest.ECKey())))
	f.Add(jwttest.StaffToken(f))
	for _, c := range jwttest.Malicious(f) {
		f.Add(c.Token)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		user, err := v.VerifyUser(t.Context(), raw)
		if err != nil {
			checkRefusal(t, err, raw, jwtauth.ErrInvalidToken)
		} else {
			checkClaims(t, user.Claims, jwttest.UserAudience)
		}
		staff, err := v.VerifyStaff(t.Context(), raw)
		if err != nil {
			checkRefusal(t, err, raw, jwtauth.ErrInvalidToken, jwtauth.ErrForbidden)
		} else {
			checkClaims(t, staff.Claims, jwttest.StaffAudience)
			if !slices.Contains(staff.Roles, jwtauth.RoleCompliance) || !slices.Contains(staff.AMR, jwtauth.MethodMFA) {
				t.Fatalf("staff token accepted without compliance and mfa: %+v", staff)
			}
		}
	})
}

func checkRefusal(t *testing.T, err error, raw string, allowed ...error) {
	t.Helper()
	if !slices.ContainsFunc(allowed, func(target error) bool { return errors.Is(err, target) }) {
		t.Fatalf("err = %v, want one of %v", err, allowed)
	}
	if jwtauth.Reason(err) == "" {
		t.Fatalf("err %v has no reason", err)
	}
	if len(raw) >= 8 && strings.Contains(err.Error(), raw) {
		t.Fatalf("err %q echoes the input", err)
	}
}

func checkClaims(t *testing.T, c jwtauth.Claims, audience string) {
	t.Helper()
	if c.Subject == "" || len(c.Subject) > jwtauth.MaxSubjectBytes || c.Issuer != jwttest.Issuer ||
		!slices.Contains(c.Audience, audience) || c.ExpiresAt.IsZero() {
		t.Fatalf("accepted claims break an invariant: %+v", c)
	}
}
