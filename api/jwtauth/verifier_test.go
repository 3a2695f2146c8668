package jwtauth_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api/jwtauth"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
)

// fixedClock is a kluis.Clock that always says the same time.
type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

// baseOptions are the options every test verifier starts from.
func baseOptions() jwtauth.Options {
	return jwtauth.Options{
		Issuer:        jwttest.Issuer,
		UserAudience:  jwttest.UserAudience,
		StaffAudience: jwttest.StaffAudience,
	}
}

// newVerifier builds a verifier on o, closed when the test ends.
func newVerifier(t testing.TB, o jwtauth.Options) *jwtauth.Verifier {
	t.Helper()
	v, err := jwtauth.New(t.Context(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

// fileVerifier is a verifier on a JWKS file of the kit's default keys.
func fileVerifier(t testing.TB, edit ...func(*jwtauth.Options)) *jwtauth.Verifier {
	t.Helper()
	o := baseOptions()
	o.JWKSFile = jwttest.WriteJWKS(t)
	for _, e := range edit {
		e(&o)
	}
	return newVerifier(t, o)
}

// wantErr fails unless err is target, and checks that its message is safe to
// log: it names a reason and does not quote the token.
func wantErr(t *testing.T, err, target error, token string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want %v", err, target)
	}
	if jwtauth.Reason(err) == "" {
		t.Errorf("err %q has no reason", err)
	}
	msg := err.Error()
	for _, part := range strings.Split(token, ".") {
		if len(part) >= 8 && strings.Contains(msg, part) {
			t.Errorf("err %q quotes the token", msg)
		}
	}
	for _, leak := range []string{"dev/null", "OR 1=1", "someone_else"} {
		if strings.Contains(msg, leak) {
			t.Errorf("err %q quotes a value from the token", msg)
		}
	}
}

func TestVerifyUserRefusesMaliciousTokens(t *testing.T) {
	t.Parallel()
	v := fileVerifier(t)
	for _, c := range jwttest.Malicious(t) {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			_, err := v.VerifyUser(t.Context(), c.Token)
			wantErr(t, err, jwtauth.ErrInvalidToken, c.Token)
			if got := kluis.ErrorCode(err); got != kluis.EUnauthenticated {
				t.Errorf("ErrorCode = %q, want %q", got, kluis.EUnauthenticated)
			}
		})
	}
}

func TestVerifyUserAcceptsGoodTokens(t *testing.T) {
	t.Parallel()
	v := fileVerifier(t)
	long := strings.Repeat("s", jwtauth.MaxSubjectBytes)
	tests := []struct {
		name    string
		token   string
		subject string
	}{
		{"an RS256 token", jwttest.Token(t), jwttest.Subject},
		{"an ES256 token", jwttest.Token(t, jwttest.WithKey(jwttest.ECKey())), jwttest.Subject},
		{"audience as a single string", jwttest.Token(t, jwttest.WithClaim("aud", jwttest.UserAudience)), jwttest.Subject},
		{"audience among others", jwttest.Token(t, jwttest.WithAudience("another-app", jwttest.UserAudience)), jwttest.Subject},
		{"extra claims", jwttest.Token(t, jwttest.WithClaim("email", "a@example.com"), jwttest.WithClaim("scope", "openid")), jwttest.Subject},
		{"no iat", jwttest.Token(t, jwttest.WithoutIssuedAt()), jwttest.Subject},
		{"a typ header", jwttest.Token(t, jwttest.WithHeader("typ", "at+jwt")), jwttest.Subject},
		{"sub of 255 characters", jwttest.Token(t, jwttest.WithSubject(long)), long},
		{"sub with punctuation", jwttest.Token(t, jwttest.WithSubject("auth0|5f7c8ec7c33c6c004bbafe82")), "auth0|5f7c8ec7c33c6c004bbafe82"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := v.VerifyUser(t.Context(), tt.token)
			if err != nil {
				t.Fatalf("VerifyUser: %v", err)
			}
			if got.Subject != tt.subject || got.Issuer != jwttest.Issuer || got.ExpiresAt.IsZero() {
				t.Errorf("claims = %+v", got)
			}
		})
	}
}

func TestVerifyStaff(t *testing.T) {
	t.Parallel()
	v := fileVerifier(t)
	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"a staff token with compliance and mfa passes", jwttest.StaffToken(t), nil},
		{"an ES256 staff token passes", jwttest.StaffToken(t, jwttest.WithKey(jwttest.ECKey())), nil},
		{"roles and amr as single strings pass", jwttest.StaffToken(t, jwttest.WithClaim("roles", "compliance"), jwttest.WithClaim("amr", "mfa")), nil},
		{"a user token is not a staff token", jwttest.Token(t, jwttest.WithRoles("compliance"), jwttest.WithAMR("mfa")), jwtauth.ErrInvalidToken},
		{"a token for both audiences is not a staff token", jwttest.StaffToken(t, jwttest.WithAudience(jwttest.StaffAudience, jwttest.UserAudience)), jwtauth.ErrInvalidToken},
		{"an expired staff token is invalid, not forbidden", jwttest.StaffToken(t, jwttest.WithExpiresIn(-time.Hour), jwttest.WithAMR("pwd")), jwtauth.ErrInvalidToken},
		{"a staff token from another issuer is invalid", jwttest.StaffToken(t, jwttest.WithIssuer("https://evil.example/")), jwtauth.ErrInvalidToken},
		{"a forged staff token is invalid", jwttest.StaffToken(t, jwttest.WithKey(jwttest.ImpostorKey())), jwtauth.ErrInvalidToken},
		{"a staff token without sub is invalid", jwttest.StaffToken(t, jwttest.WithoutSubject()), jwtauth.ErrInvalidToken},
		{"a staff token without mfa is forbidden", jwttest.StaffToken(t, jwttest.WithAMR("pwd")), jwtauth.ErrForbidden},
		{"a staff token without amr is forbidden", jwttest.StaffToken(t, jwttest.WithoutClaim("amr")), jwtauth.ErrForbidden},
		{"a staff token without roles is forbidden", jwttest.StaffToken(t, jwttest.WithoutClaim("roles")), jwtauth.ErrForbidden},
		{"a staff token with other roles is forbidden", jwttest.StaffToken(t, jwttest.WithRoles("support", "Compliance")), jwtauth.ErrForbidden},
		{"roles of the wrong type are invalid", jwttest.StaffToken(t, jwttest.WithClaim("roles", map[string]any{"compliance": true})), jwtauth.ErrInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := v.VerifyStaff(t.Context(), tt.token)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("VerifyStaff: %v", err)
				}
				if got.Subject != jwttest.StaffSubject {
					t.Errorf("Subject = %q, want %q", got.Subject, jwttest.StaffSubject)
				}
				return
			}
			wantErr(t, err, tt.want, tt.token)
			other := jwtauth.ErrForbidden
			if tt.want == jwtauth.ErrForbidden {
				other = jwtauth.ErrInvalidToken
			}
			if errors.Is(err, other) {
				t.Errorf("err %v is also %v", err, other)
			}
		})
	}
}

func TestVerifyStaffReadsAuthTime(t *testing.T) {
	t.Parallel()
	v := fileVerifier(t)
	at := time.Now().Add(-7 * time.Minute).Truncate(time.Second)
	got, err := v.VerifyStaff(t.Context(), jwttest.StaffToken(t, jwttest.WithAuthTime(at)))
	if err != nil || !got.AuthTime.Equal(at) {
		t.Fatalf("AuthTime = %v (%v), want %v", got.AuthTime, err, at)
	}
	got, err = v.VerifyStaff(t.Context(), jwttest.StaffToken(t, jwttest.WithoutAuthTime()))
	if err != nil || !got.AuthTime.IsZero() {
		t.Fatalf("AuthTime without the claim = %v (%v), want zero", got.AuthTime, err)
	}
	if _, err := v.VerifyStaff(t.Context(), jwttest.StaffToken(t, jwttest.WithClaim("auth_time", "yesterday"))); !errors.Is(err, jwtauth.ErrInvalidToken) {
		t.Fatalf("auth_time of the wrong type = %v, want invalid", err)
	}
}

func TestVerifyStaffForbiddenMapsTo403Code(t *testing.T) {
	t.Parallel()
	v := fileVerifier(t)
	_, err := v.VerifyStaff(t.Context(), jwttest.StaffToken(t, jwttest.WithAMR("pwd")))
	if got := kluis.ErrorCode(err); got != kluis.EForbidden {
		t.Errorf("ErrorCode = %q, want %q", got, kluis.EForbidden)
	}
}

func TestLeeway(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	at := jwttest.WithNow(now)
	tests := []struct {
		name   string
		leeway time.Duration
		token  string
		ok     bool
	}{
		{"expired 20 s ago passes the default leeway", 0, jwttest.Token(t, at, jwttest.WithExpiresIn(-20*time.Second)), true},
		{"expired 40 s ago fails the default leeway", 0, jwttest.Token(t, at, jwttest.WithExpiresIn(-40*time.Second)), false},
		{"issued 20 s ahead passes the default leeway", 0, jwttest.Token(t, at, jwttest.WithIssuedAt(now.Add(20*time.Second))), true},
		{"issued 40 s ahead fails the default leeway", 0, jwttest.Token(t, at, jwttest.WithIssuedAt(now.Add(40*time.Second))), false},
		{"not before 20 s ahead passes the default leeway", 0, jwttest.Token(t, at, jwttest.WithNotBefore(now.Add(20*time.Second))), true},
		{"not before 40 s ahead fails the default leeway", 0, jwttest.Token(t, at, jwttest.WithNotBefore(now.Add(40*time.Second))), false},
		{"expired 90 s ago passes a 2 minute leeway", 2 * time.Minute, jwttest.Token(t, at, jwttest.WithExpiresIn(-90*time.Second)), true},
		{"expired 3 minutes ago fails a 2 minute leeway", 2 * time.Minute, jwttest.Token(t, at, jwttest.WithExpiresIn(-3*time.Minute)), false},
		{"expired 10 s ago fails a 5 s leeway", 5 * time.Second, jwttest.Token(t, at, jwttest.WithExpiresIn(-10*time.Second)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := fileVerifier(t, func(o *jwtauth.Options) {
				o.Clock = fixedClock(now)
				o.Leeway = tt.leeway
			})
			_, err := v.VerifyUser(t.Context(), tt.token)
			if tt.ok && err != nil {
				t.Fatalf("VerifyUser: %v", err)
			}
			if !tt.ok {
				wantErr(t, err, jwtauth.ErrInvalidToken, tt.token)
			}
		})
	}
}

func TestVerifyUserIsSafeForConcurrentUse(t *testing.T) {
	t.Parallel()
	v := fileVerifier(t)
	good := jwttest.Token(t)
	bad := jwttest.Token(t, jwttest.WithKey(jwttest.ImpostorKey()))
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 20 {
				if _, err := v.VerifyUser(context.Background(), good); err != nil {
					t.Errorf("VerifyUser(good): %v", err)
				}
				if _, err := v.VerifyUser(context.Background(), bad); !errors.Is(err, jwtauth.ErrInvalidToken) {
					t.Errorf("VerifyUser(bad) = %v", err)
				}
			}
		})
	}
	wg.Wait()
}
