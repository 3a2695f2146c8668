// Package jwttest is a kit for tests that need kluis's bearer tokens: test
// signing keys, a JWKS as a file or served over HTTP, a token minter with
// options, and a table of forged and malformed tokens that must be refused.
//
// The RSA-2048 and ES256 keys are generated once per test process, so using
// the kit costs one RSA key generation however many tests call it.
package jwttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/MicahParks/jwkset"
)

// What a token from Token or StaffToken says by default, and what a verifier
// under test should be configured with.
const (
	Issuer        = "https://idp.kluis.test/"
	UserAudience  = "kluis"
	StaffAudience = "kluis-staff"
	Subject       = "user_test_1"
	StaffSubject  = "staff_test_1"

	// RSAKeyID and ECKeyID are the kids of RSAKey and ECKey.
	RSAKeyID = "test-rsa-1"
	ECKeyID  = "test-ec-1"
)

// Key is a signing key and the kid it is published under.
type Key struct {
	ID     string
	Signer crypto.Signer
}

var (
	keysOnce            sync.Once
	rsaKey, otherRSAKey *rsa.PrivateKey
	ecKey               *ecdsa.PrivateKey
	errKeys             error
)

func generate() {
	keysOnce.Do(func() {
		if rsaKey, errKeys = rsa.GenerateKey(rand.Reader, 2048); errKeys != nil {
			return
		}
		if otherRSAKey, errKeys = rsa.GenerateKey(rand.Reader, 2048); errKeys != nil {
			return
		}
		ecKey, errKeys = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	})
	if errKeys != nil {
		panic("jwttest: generate keys: " + errKeys.Error())
	}
}

// RSAKey is the process's RSA-2048 key, published as RSAKeyID.
func RSAKey() Key {
	generate()
	return Key{ID: RSAKeyID, Signer: rsaKey}
}

// ECKey is the process's P-256 key, published as ECKeyID.
func ECKey() Key {
	generate()
	return Key{ID: ECKeyID, Signer: ecKey}
}

// ImpostorKey is an RSA-2048 key that is in no JWKS but claims RSAKeyID: a
// token it signs names a known kid and must still fail.
func ImpostorKey() Key {
	generate()
	return Key{ID: RSAKeyID, Signer: otherRSAKey}
}

// NewECKey returns a fresh P-256 key under kid, for rotation tests (cheap,
// unlike RSA).
func NewECKey(t testing.TB, kid string) Key {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("jwttest: generate EC key: %v", err)
	}
	return Key{ID: kid, Signer: k}
}

// DefaultKeys are the keys a JWKS holds when none are named: RSAKey and
// ECKey.
func DefaultKeys() []Key { return []Key{RSAKey(), ECKey()} }

// JWKS returns the public JWKS of keys (DefaultKeys if none), each with its
// kid, use "sig" and alg.
func JWKS(t testing.TB, keys ...Key) []byte {
	t.Helper()
	if len(keys) == 0 {
		keys = DefaultKeys()
	}
	raw, err := jwksJSON(keys)
	if err != nil {
		t.Fatalf("jwttest: %v", err)
	}
	return raw
}

// jwksJSON is the public JWKS of exactly keys.
func jwksJSON(keys []Key) ([]byte, error) {
	set := jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{}}
	for _, k := range keys {
		m, err := publicJWK(k)
		if err != nil {
			return nil, err
		}
		set.Keys = append(set.Keys, m)
	}
	return json.Marshal(set)
}

// RawJWKS returns a JWKS document made of the given raw key objects, for
// tests of keys the kit would never publish (oct, small RSA, P-384).
func RawJWKS(t testing.TB, keys ...map[string]any) []byte {
	t.Helper()
	raw, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatalf("jwttest: marshal JWKS: %v", err)
	}
	return raw
}

// PublicJWK returns k's public JWK as a JSON object, to edit and pass to
// RawJWKS.
func PublicJWK(t testing.TB, k Key) map[string]any {
	t.Helper()
	pub, err := publicJWK(k)
	if err != nil {
		t.Fatalf("jwttest: %v", err)
	}
	raw, err := json.Marshal(pub)
	if err != nil {
		t.Fatalf("jwttest: marshal JWK: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("jwttest: unmarshal JWK: %v", err)
	}
	return m
}

func publicJWK(k Key) (jwkset.JWKMarshal, error) {
	j, err := jwkset.NewJWKFromKey(k.Signer.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{
		ALG: jwkset.ALG(algOf(k.Signer)), KID: k.ID, USE: jwkset.UseSig,
	}})
	if err != nil {
		return jwkset.JWKMarshal{}, fmt.Errorf("JWK of %s: %w", k.ID, err)
	}
	return j.Marshal(), nil
}

// WriteJWKS writes the public JWKS of keys (DefaultKeys if none) to a file in
// a temporary directory and returns its path.
func WriteJWKS(t testing.TB, keys ...Key) string {
	t.Helper()
	return WriteFile(t, JWKS(t, keys...))
}

// WriteFile writes raw to jwks.json in a fresh temporary directory and returns
// its path.
func WriteFile(t testing.TB, raw []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatalf("jwttest: write JWKS: %v", err)
	}
	return path
}

// algOf is the JWS algorithm kluis uses with a key of this type.
func algOf(s crypto.Signer) string {
	if _, ok := s.(*ecdsa.PrivateKey); ok {
		return "ES256"
	}
	return "RS256"
}
