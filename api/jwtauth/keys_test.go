package jwtauth_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/api/jwtauth"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
)

// hmacKID and hmacSecret describe a symmetric key slipped into a JWKS.
const (
	hmacKID    = "hmac-1"
	hmacSecret = "correct horse battery staple"
)

func octJWK() map[string]any {
	return map[string]any{"kty": "oct", "kid": hmacKID, "alg": "HS256", "k": base64.RawURLEncoding.EncodeToString([]byte(hmacSecret))}
}

// smallRSAKey is an RSA-1024 key: valid, but too weak to trust.
func smallRSAKey(t *testing.T) jwttest.Key {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	return jwttest.Key{ID: "rsa-1024", Signer: k}
}

func p384JWK(t *testing.T) map[string]any {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	m := jwttest.PublicJWK(t, jwttest.Key{ID: "ec-384", Signer: k})
	m["alg"] = "ES384"
	return m
}

func ed25519JWK(t *testing.T) map[string]any {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": base64.RawURLEncoding.EncodeToString(pub)}
}

// rsaJWK is the kit's RSA key as a JWK with edits applied; a nil value
// deletes the field.
func rsaJWK(t *testing.T, edits map[string]any) map[string]any {
	t.Helper()
	m := jwttest.PublicJWK(t, jwttest.RSAKey())
	for k, v := range edits {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

func TestNewRefusesBadJWKSFiles(t *testing.T) {
	t.Parallel()
	good := jwttest.PublicJWK(t, jwttest.RSAKey())
	tests := []struct {
		name string
		raw  []byte
		want string
	}{
		{"a file that is not JSON", []byte("-----BEGIN PUBLIC KEY-----"), "not a JSON Web Key Set"},
		{"an empty set", []byte(`{"keys":[]}`), "no RSA or EC P-256 signing key"},
		{"a set of one symmetric key", jwttest.RawJWKS(t, octJWK()), "no RSA or EC P-256 signing key"},
		{"an RSA-1024 key", jwttest.RawJWKS(t, good, jwttest.PublicJWK(t, smallRSAKey(t))), "1024 bits"},
		{"a P-384 key", jwttest.RawJWKS(t, good, p384JWK(t)), "refused"},
		{"an Ed25519 key", jwttest.RawJWKS(t, good, ed25519JWK(t)), "refused"},
		{"private key material", jwttest.RawJWKS(t, rsaJWK(t, map[string]any{"d": "AQAB"})), "private key material"},
		{"an encryption key", jwttest.RawJWKS(t, rsaJWK(t, map[string]any{"use": "enc"})), `"use"`},
		{"key_ops without verify", jwttest.RawJWKS(t, rsaJWK(t, map[string]any{"key_ops": []string{"encrypt"}})), "key_ops"},
		{"an RSA key for RS512", jwttest.RawJWKS(t, rsaJWK(t, map[string]any{"alg": "RS512"})), "RS512"},
		{"a key without kid", jwttest.RawJWKS(t, rsaJWK(t, map[string]any{"kid": nil})), "no kid"},
		{"an unknown key type", jwttest.RawJWKS(t, map[string]any{"kty": "XYZ", "kid": "x"}), "key 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := baseOptions()
			o.JWKSFile = jwttest.WriteFile(t, tt.raw)
			_, err := jwtauth.New(t.Context(), o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error about %q", err, tt.want)
			}
		})
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	t.Parallel()
	file := jwttest.WriteJWKS(t)
	tests := []struct {
		name string
		edit func(*jwtauth.Options)
	}{
		{"no JWKS at all", func(o *jwtauth.Options) { o.JWKSFile = "" }},
		{"both a JWKS file and a URL", func(o *jwtauth.Options) { o.JWKSURL = "https://idp.example/jwks" }},
		{"a missing JWKS file", func(o *jwtauth.Options) { o.JWKSFile = filepath.Join(t.TempDir(), "none.json") }},
		{"no issuer", func(o *jwtauth.Options) { o.Issuer = "" }},
		{"no user audience", func(o *jwtauth.Options) { o.UserAudience = "" }},
		{"no staff audience", func(o *jwtauth.Options) { o.StaffAudience = "" }},
		{"the same audience for users and staff", func(o *jwtauth.Options) { o.StaffAudience = o.UserAudience }},
		{"a leeway over 2 minutes", func(o *jwtauth.Options) { o.Leeway = jwtauth.MaxLeeway + 1 }},
		{"a negative leeway", func(o *jwtauth.Options) { o.Leeway = -1 }},
		{"a negative refresh interval", func(o *jwtauth.Options) { o.RefreshInterval = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := baseOptions()
			o.JWKSFile = file
			tt.edit(&o)
			if _, err := jwtauth.New(t.Context(), o); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
}

func TestSymmetricKeysInAFileNeverVerify(t *testing.T) {
	t.Parallel()
	o := baseOptions()
	o.JWKSFile = jwttest.WriteFile(t, jwttest.RawJWKS(t, octJWK(), jwttest.PublicJWK(t, jwttest.RSAKey())))
	v := newVerifier(t, o)

	if _, err := v.VerifyUser(t.Context(), jwttest.Token(t)); err != nil {
		t.Fatalf("VerifyUser(RSA token): %v", err)
	}
	for name, tok := range map[string]string{
		"HS256 with the shared secret": jwttest.Token(t, jwttest.WithHMACSecret([]byte(hmacSecret)), jwttest.WithKID(hmacKID)),
		"alg none under the oct kid":   jwttest.Token(t, jwttest.WithAlgNone(), jwttest.WithKID(hmacKID)),
	} {
		_, err := v.VerifyUser(t.Context(), tok)
		if err == nil {
			t.Errorf("%s: verified", name)
		}
		wantErr(t, err, jwtauth.ErrInvalidToken, tok)
	}
}
