package jwttest

import (
	"crypto"
	"maps"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DefaultLifetime is how long a minted token lives unless told otherwise.
const DefaultLifetime = 5 * time.Minute

// spec is what Mint will put in a token.
type spec struct {
	claims   jwt.MapClaims
	header   map[string]any
	key      Key
	method   jwt.SigningMethod
	secret   any // signs instead of key.Signer when set (HS256, none)
	now      time.Time
	noExp    bool
	noIat    bool
	expIn    time.Duration
	expAt    *time.Time
	iatAt    *time.Time
	dropKID  bool
	kidSet   bool
	kidValue any
	// authTimeNow puts auth_time = now in the token unless an option set
	// auth_time itself (StaffToken does).
	authTimeNow bool
}

// Option changes one thing in a minted token.
type Option func(*spec)

// WithIssuer sets iss.
func WithIssuer(iss string) Option { return WithClaim("iss", iss) }

// WithoutIssuer removes iss.
func WithoutIssuer() Option { return WithoutClaim("iss") }

// WithAudience sets aud to these values (an array, even of one).
func WithAudience(aud ...string) Option { return WithClaim("aud", aud) }

// WithoutAudience removes aud.
func WithoutAudience() Option { return WithoutClaim("aud") }

// WithSubject sets sub.
func WithSubject(sub string) Option { return WithClaim("sub", sub) }

// WithoutSubject removes sub.
func WithoutSubject() Option { return WithoutClaim("sub") }

// WithRoles sets roles.
func WithRoles(roles ...string) Option { return WithClaim("roles", roles) }

// WithAMR sets amr.
func WithAMR(amr ...string) Option { return WithClaim("amr", amr) }

// WithNow sets the time iat and the default exp are counted from (time.Now()
// otherwise).
func WithNow(now time.Time) Option { return func(s *spec) { s.now = now } }

// WithExpiresIn sets exp to now plus d (negative: already expired).
func WithExpiresIn(d time.Duration) Option {
	return func(s *spec) { s.expIn, s.expAt, s.noExp = d, nil, false }
}

// WithExpiresAt sets exp.
func WithExpiresAt(t time.Time) Option { return func(s *spec) { s.expAt, s.noExp = &t, false } }

// WithoutExpiry leaves exp out.
func WithoutExpiry() Option { return func(s *spec) { s.noExp = true } }

// WithIssuedAt sets iat.
func WithIssuedAt(t time.Time) Option { return func(s *spec) { s.iatAt, s.noIat = &t, false } }

// WithoutIssuedAt leaves iat out.
func WithoutIssuedAt() Option { return func(s *spec) { s.noIat = true } }

// WithAuthTime sets auth_time, when the staff member authenticated.
func WithAuthTime(t time.Time) Option { return WithClaim("auth_time", t.Unix()) }

// WithoutAuthTime leaves auth_time out (StaffToken puts it in otherwise).
func WithoutAuthTime() Option {
	return func(s *spec) { s.authTimeNow = false; delete(s.claims, "auth_time") }
}

// withAuthTimeNow makes auth_time the token's now unless set otherwise.
func withAuthTimeNow() Option { return func(s *spec) { s.authTimeNow = true } }

// WithNotBefore sets nbf.
func WithNotBefore(t time.Time) Option { return WithClaim("nbf", t.Unix()) }

// WithClaim sets any claim to v.
func WithClaim(name string, v any) Option { return func(s *spec) { s.claims[name] = v } }

// WithoutClaim removes a claim.
func WithoutClaim(name string) Option { return func(s *spec) { delete(s.claims, name) } }

// WithKey signs with k, under its kid and its usual algorithm.
func WithKey(k Key) Option {
	return func(s *spec) { s.key, s.method, s.secret = k, methodOf(k.Signer), nil }
}

// WithKID puts kid in the header whatever key signs: a string, or any value
// to test odd types.
func WithKID(kid any) Option {
	return func(s *spec) { s.kidSet, s.kidValue, s.dropKID = true, kid, false }
}

// WithoutKID leaves kid out of the header.
func WithoutKID() Option { return func(s *spec) { s.dropKID = true } }

// WithHeader sets any header field.
func WithHeader(name string, v any) Option { return func(s *spec) { s.header[name] = v } }

// WithMethod signs with the key's private key under another algorithm of its
// family (RS384, PS256 with an RSA key; ES384 with an EC key fails to sign).
func WithMethod(alg string) Option {
	return func(s *spec) { s.method = jwt.GetSigningMethod(alg) }
}

// WithHMACSecret signs with HS256 and secret: the forgery where a verifier is
// tricked into using a public key as an HMAC key.
func WithHMACSecret(secret []byte) Option {
	return func(s *spec) { s.method, s.secret = jwt.SigningMethodHS256, secret }
}

// WithAlgNone makes an unsigned token, "alg": "none".
func WithAlgNone() Option {
	return func(s *spec) { s.method, s.secret = jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType }
}

// Token mints a user token: iss Issuer, aud UserAudience, sub Subject, iat
// now, exp in DefaultLifetime, RS256 under RSAKeyID, then opts.
func Token(t testing.TB, opts ...Option) string {
	t.Helper()
	return Mint(t, append([]Option{WithAudience(UserAudience), WithSubject(Subject)}, opts...)...)
}

// StaffToken mints a staff token: as Token, but aud StaffAudience, sub
// StaffSubject, roles [compliance], amr [pwd mfa] and auth_time now (a
// fresh MFA), then opts.
func StaffToken(t testing.TB, opts ...Option) string {
	t.Helper()
	return Mint(t, append([]Option{
		WithAudience(StaffAudience), WithSubject(StaffSubject),
		WithRoles("compliance"), WithAMR("pwd", "mfa"), withAuthTimeNow(),
	}, opts...)...)
}

// Mint signs a token with iss Issuer, iat and exp, and whatever opts add: no
// aud or sub unless asked.
func Mint(t testing.TB, opts ...Option) string {
	t.Helper()
	s := &spec{
		claims: jwt.MapClaims{"iss": Issuer},
		header: map[string]any{},
		expIn:  DefaultLifetime,
	}
	WithKey(RSAKey())(s)
	for _, o := range opts {
		o(s)
	}
	if s.now.IsZero() {
		s.now = time.Now()
	}
	if !s.noIat {
		iat := s.now
		if s.iatAt != nil {
			iat = *s.iatAt
		}
		s.claims["iat"] = iat.Unix()
	}
	if _, set := s.claims["auth_time"]; s.authTimeNow && !set {
		s.claims["auth_time"] = s.now.Unix()
	}
	if !s.noExp {
		exp := s.now.Add(s.expIn)
		if s.expAt != nil {
			exp = *s.expAt
		}
		s.claims["exp"] = exp.Unix()
	}
	if s.method == nil {
		t.Fatalf("jwttest: unknown signing method")
	}
	tok := jwt.NewWithClaims(s.method, s.claims)
	tok.Header["kid"] = s.key.ID
	if s.kidSet {
		tok.Header["kid"] = s.kidValue
	}
	if s.dropKID {
		delete(tok.Header, "kid")
	}
	maps.Copy(tok.Header, s.header)
	var key any = s.key.Signer
	if s.secret != nil {
		key = s.secret
	}
	raw, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("jwttest: sign token: %v", err)
	}
	return raw
}

func methodOf(s crypto.Signer) jwt.SigningMethod { return jwt.GetSigningMethod(algOf(s)) }
