package idempotency_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/api/idempotency"
)

func testMAC(label string, parts ...[]byte) ([]byte, error) {
	m := hmac.New(sha256.New, []byte("test key"))
	m.Write([]byte(label))
	for _, p := range parts {
		m.Write([]byte{0})
		m.Write(p)
	}
	return m.Sum(nil), nil
}

func claim(t *testing.T, r idempotency.Request) *idempotency.Claim {
	t.Helper()
	c, err := idempotency.NewClaim(testMAC, r, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A claim names the caller's key and fingerprints the whole request: the
// same request under another key or by another caller is another row, the
// same key with another body is the same row with another fingerprint, and
// the order of route parameters does not matter.
func TestAClaimBindsTheCallerTheKeyAndTheRequest(t *testing.T) {
	base := idempotency.Request{Scope: "user:u1", Key: "k1", Method: "POST", Path: "/v1/x/:id/:y", Params: []string{"id=1", "y=2"}, Body: []byte(`{}`)}
	a := claim(t, base)
	reordered := base
	reordered.Params = []string{"y=2", "id=1"}
	if b := claim(t, reordered); !bytes.Equal(a.Fingerprint, b.Fingerprint) || !bytes.Equal(a.KeyHash, b.KeyHash) {
		t.Fatal("the order of route parameters changed the claim")
	}
	otherBody := base
	otherBody.Body = []byte(`{"a":1}`)
	if b := claim(t, otherBody); !bytes.Equal(a.KeyHash, b.KeyHash) || bytes.Equal(a.Fingerprint, b.Fingerprint) {
		t.Fatal("another body must keep the key's row and change its fingerprint")
	}
	otherCaller := base
	otherCaller.Scope = "user:u2"
	if b := claim(t, otherCaller); bytes.Equal(a.ScopeHash, b.ScopeHash) || bytes.Equal(a.KeyHash, b.KeyHash) || bytes.Equal(a.BodyKey, b.BodyKey) {
		t.Fatal("another caller's key must be another row with another body key")
	}
	if bytes.Contains(a.KeyHash, []byte("k1")) || len(a.BodyKey) != sha256.Size {
		t.Fatal("the key must be stored only as a keyed hash, the body key 32 bytes")
	}
}

func TestAClaimFailsClosedWithoutTheKey(t *testing.T) {
	down := errors.New("key store down")
	_, err := idempotency.NewClaim(func(string, ...[]byte) ([]byte, error) { return nil, down }, idempotency.Request{Scope: "s", Key: "k"}, 0, 0)
	if !errors.Is(err, down) {
		t.Fatalf("err = %v, want the key's error", err)
	}
}

func TestValidKey(t *testing.T) {
	for k, want := range map[string]bool{
		"": false, "a": true, strings.Repeat("x", 255): true, strings.Repeat("x", 256): false,
		"tab\there": false, "é": false, "~ !": true,
	} {
		if got := idempotency.ValidKey(k); got != want {
			t.Errorf("ValidKey(%q) = %v, want %v", k, got, want)
		}
	}
}
