package jwttest

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

// Case is one named token for a table test.
type Case struct {
	Name  string
	Token string
}

// Malicious returns tokens that a verifier configured with Issuer,
// UserAudience, StaffAudience and the DefaultKeys must refuse as user tokens:
// forgeries, tokens for someone else, tokens past their time, and plain
// garbage. The staff token is among them: it is valid, but not as a user
// token.
func Malicious(t testing.TB) []Case {
	t.Helper()
	rsaPub := RSAKey().Signer.Public()
	pkix, err := x509.MarshalPKIXPublicKey(rsaPub)
	if err != nil {
		t.Fatalf("jwttest: marshal public key: %v", err)
	}
	ecPKIX, err := x509.MarshalPKIXPublicKey(ECKey().Signer.Public())
	if err != nil {
		t.Fatalf("jwttest: marshal public key: %v", err)
	}
	pkcs1 := x509.MarshalPKCS1PublicKey(rsaPub.(*rsa.PublicKey))
	pkixPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix})
	pkcs1PEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: pkcs1})
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecPKIX})
	hour := time.Hour

	good := Token(t)
	other := Token(t, WithSubject("user_someone_else"))

	return []Case{
		{"alg none", Token(t, WithAlgNone())},
		{"alg none without a kid", Token(t, WithAlgNone(), WithoutKID())},
		{"HS256 keyed with the RSA public key as PKIX PEM", Token(t, WithHMACSecret(pkixPEM))},
		{"HS256 keyed with the RSA public key as PKIX PEM without its last newline", Token(t, WithHMACSecret(pkixPEM[:len(pkixPEM)-1]))},
		{"HS256 keyed with the RSA public key as PKCS#1 PEM", Token(t, WithHMACSecret(pkcs1PEM))},
		{"HS256 keyed with the RSA public key as PKIX DER", Token(t, WithHMACSecret(pkix))},
		{"HS256 keyed with the RSA public key as PKCS#1 DER", Token(t, WithHMACSecret(pkcs1))},
		{"HS256 keyed with the EC public key as PEM under the EC kid", Token(t, WithHMACSecret(ecPEM), WithKID(ECKeyID))},
		{"no exp", Token(t, WithoutExpiry())},
		{"expired an hour ago", Token(t, WithExpiresIn(-hour))},
		{"not valid before an hour from now", Token(t, WithNotBefore(time.Now().Add(hour)))},
		{"issued an hour in the future", Token(t, WithIssuedAt(time.Now().Add(hour)))},
		{"wrong audience", Token(t, WithAudience("another-app"))},
		{"no audience", Token(t, WithoutAudience())},
		{"audience as a number", Token(t, WithClaim("aud", 42))},
		{"a staff token", StaffToken(t)},
		{"both the user and the staff audience", Token(t, WithAudience(UserAudience, StaffAudience))},
		{"wrong issuer", Token(t, WithIssuer("https://evil.example/"))},
		{"issuer with a trailing difference", Token(t, WithIssuer(strings.TrimSuffix(Issuer, "/")))},
		{"no issuer", Token(t, WithoutIssuer())},
		{"signed by an unknown key under a known kid", Token(t, WithKey(ImpostorKey()))},
		{"signed by an unknown key under an unknown kid", Token(t, WithKey(Key{ID: "test-rsa-2", Signer: ImpostorKey().Signer}))},
		{"payload edited after signing", editPayload(t, good, "sub", "user_someone_else")},
		{"expiry extended after signing", editPayload(t, Token(t, WithExpiresIn(-hour)), "exp", time.Now().Add(hour).Unix())},
		{"signature removed", strings.Join(strings.Split(good, ".")[:2], ".") + "."},
		{"signature of another token", swapSignature(good, other)},
		{"attacker's key embedded in a jwk header", Token(t, WithKey(Key{ID: "attacker-1", Signer: ImpostorKey().Signer}), WithHeader("jwk", PublicJWK(t, Key{ID: "attacker-1", Signer: ImpostorKey().Signer})))},
		{"jku header pointing at the attacker's JWKS", Token(t, WithKey(Key{ID: "attacker-1", Signer: ImpostorKey().Signer}), WithHeader("jku", "https://evil.example/jwks.json"))},
		{"kid ../../dev/null", Token(t, WithKID("../../dev/null"))},
		{"kid ' OR 1=1--", Token(t, WithKID("' OR 1=1--"))},
		{"kid as a number", Token(t, WithKID(1))},
		{"empty kid", Token(t, WithKID(""))},
		{"no kid", Token(t, WithoutKID())},
		{"RS384 with the right key", Token(t, WithMethod("RS384"))},
		{"PS256 with the right key", Token(t, WithMethod("PS256"))},
		{"ES256 under the RSA key's kid", Token(t, WithKey(ECKey()), WithKID(RSAKeyID))},
		{"RS256 under the EC key's kid", Token(t, WithKID(ECKeyID))},
		{"crit header", Token(t, WithHeader("crit", []string{"exp"}), WithHeader("exp", 1))},
		{"no sub", Token(t, WithoutSubject())},
		{"empty sub", Token(t, WithSubject(""))},
		{"sub of 256 characters", Token(t, WithSubject(strings.Repeat("a", 256)))},
		{"sub with a newline", Token(t, WithSubject("user_1\nuser_2"))},
		{"sub with a space", Token(t, WithSubject("user 1"))},
		{"sub as a number", Token(t, WithClaim("sub", 12345))},
		{"token longer than 8 KiB", Token(t, WithClaim("pad", strings.Repeat("x", 9<<10)))},
		{"empty string", ""},
		{"not a JWT", "not-a-jwt"},
		{"two segments", strings.Join(strings.Split(good, ".")[:2], ".")},
		{"four segments", good + ".AAAA"},
		{"base64 padding added", padded(t)},
	}
}

func editPayload(t testing.TB, token, claim string, v any) string {
	t.Helper()
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("jwttest: decode payload: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatalf("jwttest: unmarshal payload: %v", err)
	}
	claims[claim] = v
	raw, err = json.Marshal(claims)
	if err != nil {
		t.Fatalf("jwttest: marshal payload: %v", err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

func swapSignature(token, from string) string {
	parts := strings.Split(token, ".")
	parts[2] = strings.Split(from, ".")[2]
	return strings.Join(parts, ".")
}

// padded returns a good token whose payload carries base64 "=" padding,
// which the JWS compact form forbids. The payload is grown until its length
// needs padding.
func padded(t testing.TB) string {
	t.Helper()
	for i := range 4 {
		parts := strings.Split(Token(t, WithClaim("p", strings.Repeat("x", i))), ".")
		if n := len(parts[1]) % 4; n != 0 {
			parts[1] += strings.Repeat("=", 4-n)
			return strings.Join(parts, ".")
		}
	}
	t.Fatalf("jwttest: no payload length needed padding")
	return ""
}
