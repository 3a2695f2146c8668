// Package jwtauth verifies the bearer tokens of kluis's users and compliance
// staff: RS256 or ES256 JWTs from one issuer, checked against that issuer's
// JWKS with golang-jwt's strict parser.
//
// A user token and a staff token differ by audience; a token that names both
// audiences is neither. Every failure is ErrInvalidToken (401) or, for a valid
// staff token without the compliance role or mfa, ErrForbidden (403); Reason
// gives a loggable why.
package jwtauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/kluis-dev/kluis"
)

// Limits and defaults.
const (
	// MaxTokenBytes bounds a raw token. Real ones are under 2 KiB; the bound
	// keeps a hostile header from costing decoding time.
	MaxTokenBytes = 8 << 10
	// MaxSubjectBytes bounds sub, which kluis stores as the data subject.
	MaxSubjectBytes = 255

	// DefaultLeeway and MaxLeeway bound the clock skew forgiven on exp, nbf
	// and iat.
	DefaultLeeway = 30 * time.Second
	MaxLeeway     = 2 * time.Minute
	// DefaultRefreshInterval is how often a JWKS URL is fetched in the
	// background.
	DefaultRefreshInterval = 5 * time.Minute
	// DefaultUnknownKIDRefreshInterval is the floor between fetches caused by
	// unknown kids.
	DefaultUnknownKIDRefreshInterval = 30 * time.Second
	// DefaultHTTPTimeout bounds one JWKS fetch.
	DefaultHTTPTimeout = 10 * time.Second

	// RoleCompliance and MethodMFA are what a staff token must carry in roles
	// and amr.
	RoleCompliance = "compliance"
	MethodMFA      = "mfa"
)

// The only signing methods kluis accepts. Everything else, "none" and the
// HMAC family above all, fails before a key is looked up.
var validMethods = []string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg()}

// Options configure a Verifier. Exactly one of JWKSFile and JWKSURL is set;
// Issuer, UserAudience and StaffAudience are required, and the audiences
// differ. Zero durations take the defaults.
type Options struct {
	// JWKSFile is a JWKS file, read once by New.
	JWKSFile string
	// JWKSURL is fetched by New and then kept fresh. It must be https unless
	// it points at a loopback address.
	JWKSURL string

	Issuer        string
	UserAudience  string
	StaffAudience string

	// Leeway absorbs clock skew on exp, nbf and iat: 30 s by default, at most
	// 2 minutes.
	Leeway time.Duration

	// RefreshInterval is how often the JWKS URL is fetched in the background
	// (5 minutes by default).
	RefreshInterval time.Duration
	// UnknownKIDRefreshInterval is the least time between two fetches caused
	// by a token whose kid is unknown (30 s by default).
	UnknownKIDRefreshInterval time.Duration
	// HTTPTimeout bounds one JWKS fetch (10 s by default).
	HTTPTimeout time.Duration
	// HTTPClient, if set, supplies the transport for JWKS fetches (a private
	// CA, say). Its timeout is capped at HTTPTimeout and redirects are refused.
	HTTPClient *http.Client

	// Clock is the time tokens are judged at; the system clock if nil.
	Clock kluis.Clock
	// Logger receives refresh failures and refused JWKS keys; slog.Default()
	// if nil. Nothing about a token is ever logged here.
	Logger *slog.Logger
}

// Verifier checks user and staff tokens. It is safe for concurrent use.
type Verifier struct {
	keys          keyfunc.Keyfunc
	userParser    *jwt.Parser
	staffParser   *jwt.Parser
	userAudience  string
	staffAudience string
	cancel        context.CancelFunc
	// opts are the options it was built with (ForUsers derives from them).
	opts Options
}

// New loads the keys and returns a Verifier. A bad JWKS file, an unreachable
// or unusable JWKS URL, or a bad option is an error: kluis must not start
// without a way to verify tokens. Background refreshes stop when ctx ends or
// Close is called.
func New(ctx context.Context, o Options) (*Verifier, error) {
	if err := o.setDefaults(); err != nil {
		return nil, fmt.Errorf("jwtauth: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	storage, err := newStorage(ctx, o)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("jwtauth: %w", err)
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: storage})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("jwtauth: %w", err)
	}
	return &Verifier{
		keys:          kf,
		userParser:    newParser(o, o.UserAudience),
		staffParser:   newParser(o, o.StaffAudience),
		userAudience:  o.UserAudience,
		staffAudience: o.StaffAudience,
		cancel:        cancel,
		opts:          o,
	}, nil
}

// ForUsers returns a Verifier of the user tokens of another issuer and
// audience (an app's) that shares v's keys, their refresh and v's staff
// audience (a token naming it is refused as a user token). It fetches
// nothing; closing v stops the shared refresh.
func (v *Verifier) ForUsers(issuer, audience string) *Verifier {
	o := v.opts
	o.Issuer, o.UserAudience = issuer, audience
	return &Verifier{
		keys:          v.keys,
		userParser:    newParser(o, audience),
		staffParser:   v.staffParser,
		userAudience:  audience,
		staffAudience: v.staffAudience,
		cancel:        func() {},
		opts:          o,
	}
}

// Options returns the options v was built with (defaults filled in).
func (v *Verifier) Options() Options { return v.opts }

// Peek returns a token's iss and aud without verifying anything, so that
// the caller can choose whose settings verify it (the app's). Only the
// size is checked; the chosen Verifier checks everything else.
func Peek(raw string) (issuer string, audience []string, err error) {
	if raw == "" || len(raw) > MaxTokenBytes {
		return "", nil, invalid("empty or too long token")
	}
	var rc jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(raw, &rc); err != nil {
		return "", nil, invalid("malformed token")
	}
	return rc.Issuer, []string(rc.Audience), nil
}

// Close stops the background JWKS refresh. Verification keeps working on the
// keys already fetched.
func (v *Verifier) Close() { v.cancel() }

func (o *Options) setDefaults() error {
	if (o.JWKSFile == "") == (o.JWKSURL == "") {
		return errors.New("set exactly one of the JWKS file and the JWKS URL")
	}
	if o.Issuer == "" {
		return errors.New("issuer is required")
	}
	if o.UserAudience == "" || o.StaffAudience == "" {
		return errors.New("user and staff audiences are required")
	}
	if o.UserAudience == o.StaffAudience {
		return errors.New("user and staff audiences must differ, or a user token would pass as a staff token")
	}
	switch {
	case o.Leeway < 0 || o.Leeway > MaxLeeway:
		return fmt.Errorf("leeway %s is outside 0 to %s", o.Leeway, MaxLeeway)
	case o.Leeway == 0:
		o.Leeway = DefaultLeeway
	}
	if o.RefreshInterval < 0 || o.UnknownKIDRefreshInterval < 0 || o.HTTPTimeout < 0 {
		return errors.New("refresh intervals and HTTP timeout must not be negative")
	}
	if o.RefreshInterval == 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	if o.UnknownKIDRefreshInterval == 0 {
		o.UnknownKIDRefreshInterval = DefaultUnknownKIDRefreshInterval
	}
	if o.HTTPTimeout == 0 {
		o.HTTPTimeout = DefaultHTTPTimeout
	}
	if o.Clock == nil {
		o.Clock = kluis.SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

func newStorage(ctx context.Context, o Options) (jwkset.Storage, error) {
	if o.JWKSFile != "" {
		return loadJWKSFile(o.JWKSFile)
	}
	return newRemoteKeys(ctx, o.JWKSURL, o, o.Logger.With("component", "jwks"))
}

// newParser builds golang-jwt's strict parser for one audience: allowed
// methods, issuer, audience and exp required, iat not in the future.
func newParser(o Options, audience string) *jwt.Parser {
	return jwt.NewParser(
		jwt.WithValidMethods(validMethods),
		jwt.WithIssuer(o.Issuer),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(o.Leeway),
		jwt.WithTimeFunc(o.Clock.Now),
		jwt.WithStrictDecoding(),
	)
}

// Claims are what kluis uses of a verified token.
type Claims struct {
	// Subject is sub: the data subject of a user token, the staff member of a
	// staff token. Non-empty, at most 255 printable ASCII characters.
	Subject   string
	Issuer    string
	Audience  []string
	ID        string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// UserClaims are the claims of a verified user token.
type UserClaims struct {
	Claims
}

// StaffClaims are the claims of a verified staff token; Roles holds
// compliance and AMR holds mfa. AuthTime is auth_time (OpenID Connect: when
// the staff member authenticated), zero when the token has none; the api
// package decides how recent it must be.
type StaffClaims struct {
	Claims
	Roles    []string
	AMR      []string
	AuthTime time.Time
}

// tokenClaims is the shape decoded from a token. ClaimStrings accepts a
// single string or an array, as identity providers differ.
type tokenClaims struct {
	jwt.RegisteredClaims
	Roles    jwt.ClaimStrings `json:"roles,omitempty"`
	AMR      jwt.ClaimStrings `json:"amr,omitempty"`
	AuthTime *jwt.NumericDate `json:"auth_time,omitempty"`
}

// VerifyUser checks a user token and returns its claims. Any failure is
// ErrInvalidToken.
func (v *Verifier) VerifyUser(ctx context.Context, raw string) (UserClaims, error) {
	var tc tokenClaims
	if err := v.verify(ctx, raw, v.userParser, v.staffAudience, &tc); err != nil {
		return UserClaims{}, err
	}
	return UserClaims{Claims: tc.claims()}, nil
}

// VerifyStaff checks a staff token and returns its claims. A token that is
// not a valid staff token is ErrInvalidToken; a valid one without the
// compliance role or without mfa is ErrForbidden.
func (v *Verifier) VerifyStaff(ctx context.Context, raw string) (StaffClaims, error) {
	var tc tokenClaims
	if err := v.verify(ctx, raw, v.staffParser, v.userAudience, &tc); err != nil {
		return StaffClaims{}, err
	}
	if !slices.Contains(tc.Roles, RoleCompliance) {
		return StaffClaims{}, forbidden("staff token lacks the compliance role")
	}
	if !slices.Contains(tc.AMR, MethodMFA) {
		return StaffClaims{}, forbidden("staff token lacks mfa in amr")
	}
	sc := StaffClaims{Claims: tc.claims(), Roles: tc.Roles, AMR: tc.AMR}
	if tc.AuthTime != nil {
		sc.AuthTime = tc.AuthTime.Time
	}
	return sc, nil
}

// verify parses raw with p into tc and applies the checks both kinds of token
// share. otherAudience is the audience the token must not also name.
func (v *Verifier) verify(ctx context.Context, raw string, p *jwt.Parser, otherAudience string, tc *tokenClaims) error {
	if raw == "" {
		return invalid("empty token")
	}
	if len(raw) > MaxTokenBytes {
		return invalid("token too long")
	}
	if _, err := p.ParseWithClaims(raw, tc, v.keyfunc(ctx)); err != nil {
		return invalid(parseReason(err))
	}
	if slices.Contains(tc.Audience, otherAudience) {
		return invalid("token names both the user and the staff audience")
	}
	if !validSubject(tc.Subject) {
		return invalid("sub missing, too long or not printable")
	}
	return nil
}

// Header checks made before a key is looked up.
var (
	errNoKID = errors.New("no kid")
	errCrit  = errors.New("crit header")
)

// keyfunc wraps keyfunc's lookup with two refusals of its own: a token must
// name its key (else keyfunc would try every key in the set), and a "crit"
// header names extensions this verifier does not implement (RFC 7515 4.1.11).
func (v *Verifier) keyfunc(ctx context.Context) jwt.Keyfunc {
	lookup := v.keys.KeyfuncCtx(ctx)
	return func(t *jwt.Token) (any, error) {
		if kid, ok := t.Header[jwkset.HeaderKID].(string); !ok || kid == "" {
			return nil, errNoKID
		}
		if _, ok := t.Header["crit"]; ok {
			return nil, errCrit
		}
		return lookup(t)
	}
}

// parseReason names a golang-jwt failure in fixed words; the library's own
// messages can quote the token's kid, so they are not passed on.
func parseReason(err error) string {
	for _, r := range []struct {
		target error
		reason string
	}{
		{errNoKID, "token names no key id"},
		{errCrit, "token has a crit header"},
		{jwkset.ErrKeyNotFound, "unknown signing key"},
		{context.Canceled, "request ended during key lookup"},
		{context.DeadlineExceeded, "request ended during key lookup"},
		{jwt.ErrTokenMalformed, "malformed token"},
		{jwt.ErrTokenSignatureInvalid, "bad signature or signing method"},
		{jwt.ErrTokenUnverifiable, "signing key not usable for this token"},
		{jwt.ErrTokenRequiredClaimMissing, "a required claim is missing"},
		{jwt.ErrTokenExpired, "token expired"},
		{jwt.ErrTokenNotValidYet, "token not valid yet"},
		{jwt.ErrTokenUsedBeforeIssued, "token issued in the future"},
		{jwt.ErrTokenInvalidAudience, "wrong audience"},
		{jwt.ErrTokenInvalidIssuer, "wrong issuer"},
	} {
		if errors.Is(err, r.target) {
			return r.reason
		}
	}
	return "invalid token"
}

// validSubject accepts 1 to MaxSubjectBytes printable ASCII characters with no
// space: sub becomes a database key and appears in audit entries.
func validSubject(sub string) bool {
	if sub == "" || len(sub) > MaxSubjectBytes {
		return false
	}
	for i := 0; i < len(sub); i++ {
		if sub[i] < 0x21 || sub[i] > 0x7e {
			return false
		}
	}
	return true
}

func (tc *tokenClaims) claims() Claims {
	c := Claims{
		Subject:  tc.Subject,
		Issuer:   tc.Issuer,
		Audience: slices.Clone([]string(tc.Audience)),
		ID:       tc.ID,
	}
	if tc.IssuedAt != nil {
		c.IssuedAt = tc.IssuedAt.Time
	}
	if tc.ExpiresAt != nil {
		c.ExpiresAt = tc.ExpiresAt.Time
	}
	return c
}
