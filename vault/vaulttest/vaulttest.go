// Package vaulttest is the contract suite every vault.KeyProvider passes: the
// local key, AWS KMS and Vault Transit run the same checks from their own
// tests, each through a Harness that knows how to drive its backend.
package vaulttest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/vault"
)

// Harness is one provider under test and the hooks the suite needs to drive
// its backend. A nil hook skips the checks that need it.
type Harness struct {
	// Provider is the provider under test, fresh for this (sub)test.
	Provider vault.KeyProvider
	// ProviderName is what Describe must report as RootKeyInfo.Provider.
	ProviderName string
	// Rotate makes a new root key version in the backend. Nil where the root
	// key cannot rotate in place (the local key): the rotation check then
	// only rewraps under the one version there is.
	Rotate func(t *testing.T)
	// Unbound, when not empty, says why this provider cannot bind a wrapped
	// key to its keyID; the cross-keyID check is then skipped with it.
	Unbound string
	// Unavailable makes the backend unreachable, sealed or hanging for the
	// rest of the test.
	Unavailable func(t *testing.T)
	// Refuse makes the backend answer and refuse every call from now on
	// (access denied, key disabled, bad token).
	Refuse func(t *testing.T)
}

// unavailableDeadline is how long the suite gives a call against a dead
// backend: the provider must give up by then with ErrKeyUnavailable.
const unavailableDeadline = 2 * time.Second

// deadlineGrace is how late after its deadline a call may still return. It
// is generous on purpose: the check is that a call does not hang past its
// deadline, not how fast it gives up.
const deadlineGrace = 5 * time.Second

// TestProvider runs the contract suite. newHarness is called once per check,
// with that check's t, so each check gets its own provider and backend.
func TestProvider(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Helper()
	checks := []struct {
		name string
		run  func(t *testing.T, h Harness)
	}{
		{"a generated key is 32 fresh bytes, wrapped", testGenerate},
		{"an unwrapped key equals the generated one", testRoundTrip},
		{"a key bound to one id does not unwrap under another", testWrongKeyID},
		{"a flipped byte is refused", testFlippedByte},
		{"a wrapped key of the wrong shape is refused", testGarbage},
		{"rewrap moves keys to the newest root version and keeps them", testRewrap},
		{"rewrap of nothing is nothing", testRewrapEmpty},
		{"describe reports the newest version", testDescribe},
		{"a backend that is down is unavailable within the deadline", testUnavailable},
		{"a backend that refuses is a refusal", testRefused},
		{"concurrent calls are safe", testConcurrent},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, newHarness(t))
		})
	}
}

func testGenerate(t *testing.T, h Harness) {
	ctx := testContext(t)
	a := mustGenerate(t, h.Provider, "sk_generate")
	b := mustGenerate(t, h.Provider, "sk_generate")
	for _, k := range []vault.DataKey{a, b} {
		if got := len(k.Plaintext); got != 32 {
			t.Fatalf("plaintext is %d bytes, want 32", got)
		}
		if len(k.Wrapped.Ciphertext) == 0 {
			t.Fatal("wrapped ciphertext is empty")
		}
		if bytes.Contains(k.Wrapped.Ciphertext, k.Plaintext) {
			t.Fatal("wrapped ciphertext contains the plaintext")
		}
		if bytes.Equal(k.Plaintext, make([]byte, 32)) {
			t.Fatal("plaintext is all zeroes")
		}
	}
	if bytes.Equal(a.Plaintext, b.Plaintext) {
		t.Fatal("two generated keys are equal")
	}
	if bytes.Equal(a.Wrapped.Ciphertext, b.Wrapped.Ciphertext) {
		t.Fatal("two wrapped keys are equal")
	}
	info, err := h.Provider.Describe(ctx)
	if err != nil {
		t.Fatalf("Describe: %v", err)
	}
	if got, want := a.Wrapped.RootVersion, info.LatestVersion; got != want {
		t.Fatalf("RootVersion = %q, want the latest %q", got, want)
	}
}

func testRoundTrip(t *testing.T, h Harness) {
	ctx := testContext(t)
	k := mustGenerate(t, h.Provider, "sk_roundtrip")
	got, err := h.Provider.Unwrap(ctx, "sk_roundtrip", k.Wrapped)
	if err != nil {
		t.Fatalf("Unwrap: %v", err)
	}
	if !bytes.Equal(got, k.Plaintext) {
		t.Fatal("unwrapped key differs from the generated one")
	}
	// Unwrapping is repeatable: nothing about it is single-use.
	again, err := h.Provider.Unwrap(ctx, "sk_roundtrip", vault.WrappedKey{Ciphertext: bytes.Clone(k.Wrapped.Ciphertext), RootVersion: k.Wrapped.RootVersion})
	if err != nil {
		t.Fatalf("second Unwrap: %v", err)
	}
	if !bytes.Equal(again, k.Plaintext) {
		t.Fatal("second Unwrap gave another key")
	}
}

func testWrongKeyID(t *testing.T, h Harness) {
	if h.Unbound != "" {
		t.Skip(h.Unbound)
	}
	ctx := testContext(t)
	k := mustGenerate(t, h.Provider, "sk_owner")
	_, err := h.Provider.Unwrap(ctx, "sk_intruder", k.Wrapped)
	wantErr(t, err, vault.ErrKeyRefused, secretsOf(k)...)
	_, err = h.Provider.Rewrap(ctx, []vault.RewrapItem{{KeyID: "sk_intruder", Wrapped: k.Wrapped}})
	wantErr(t, err, vault.ErrKeyRefused, secretsOf(k)...)
}

func testFlippedByte(t *testing.T, h Harness) {
	ctx := testContext(t)
	k := mustGenerate(t, h.Provider, "sk_flip")
	n := len(k.Wrapped.Ciphertext)
	for _, at := range []int{0, n / 2, n - 1} {
		ct := bytes.Clone(k.Wrapped.Ciphertext)
		ct[at] ^= 0x01
		_, err := h.Provider.Unwrap(ctx, "sk_flip", vault.WrappedKey{Ciphertext: ct, RootVersion: k.Wrapped.RootVersion})
		wantErr(t, err, vault.ErrKeyRefused, append(secretsOf(k), ct)...)
	}
}

func testGarbage(t *testing.T, h Harness) {
	ctx := testContext(t)
	k := mustGenerate(t, h.Provider, "sk_garbage")
	for _, ct := range [][]byte{nil, {0}, k.Wrapped.Ciphertext[:len(k.Wrapped.Ciphertext)/2]} {
		_, err := h.Provider.Unwrap(ctx, "sk_garbage", vault.WrappedKey{Ciphertext: ct, RootVersion: k.Wrapped.RootVersion})
		wantErr(t, err, vault.ErrKeyRefused, secretsOf(k)...)
	}
}

func testRewrap(t *testing.T, h Harness) {
	ctx := testContext(t)
	a := mustGenerate(t, h.Provider, "sk_rewrap_a")
	b := mustGenerate(t, h.Provider, "sk_rewrap_b")
	before := mustDescribe(t, h.Provider)
	if h.Rotate != nil {
		h.Rotate(t)
	}
	after := mustDescribe(t, h.Provider)
	if h.Rotate != nil && before.LatestVersion != "" && after.LatestVersion == before.LatestVersion {
		t.Fatalf("rotation left the latest version at %q", after.LatestVersion)
	}
	got, err := h.Provider.Rewrap(ctx, []vault.RewrapItem{
		{KeyID: "sk_rewrap_a", Wrapped: a.Wrapped},
		{KeyID: "sk_rewrap_b", Wrapped: b.Wrapped},
	})
	if err != nil {
		t.Fatalf("Rewrap: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("Rewrap returned %d keys, want 2", len(got))
	}
	for i, want := range []struct {
		id  string
		key vault.DataKey
	}{{"sk_rewrap_a", a}, {"sk_rewrap_b", b}} {
		if got[i].RootVersion != after.LatestVersion {
			t.Errorf("item %d: RootVersion = %q, want the latest %q", i, got[i].RootVersion, after.LatestVersion)
		}
		if h.Rotate != nil && bytes.Equal(got[i].Ciphertext, want.key.Wrapped.Ciphertext) {
			t.Errorf("item %d: ciphertext unchanged after rotation and rewrap", i)
		}
		plaintext, err := h.Provider.Unwrap(ctx, want.id, got[i])
		if err != nil {
			t.Fatalf("item %d: Unwrap after rewrap: %v", i, err)
		}
		if !bytes.Equal(plaintext, want.key.Plaintext) {
			t.Fatalf("item %d: rewrapped key unwraps to another key", i)
		}
	}
	// The old wrapping still opens: rotation adds a version, it does not
	// retire the old one, so keys not yet rewrapped stay readable.
	if _, err := h.Provider.Unwrap(ctx, "sk_rewrap_a", a.Wrapped); err != nil {
		t.Fatalf("Unwrap of a key wrapped before rotation: %v", err)
	}
}

func testRewrapEmpty(t *testing.T, h Harness) {
	got, err := h.Provider.Rewrap(testContext(t), nil)
	if err != nil {
		t.Fatalf("Rewrap(nil): %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("Rewrap(nil) returned %d keys", len(got))
	}
}

func testDescribe(t *testing.T, h Harness) {
	info := mustDescribe(t, h.Provider)
	if info.Provider != h.ProviderName {
		t.Errorf("Provider = %q, want %q", info.Provider, h.ProviderName)
	}
	if info.KeyID == "" {
		t.Error("KeyID is empty")
	}
	if h.Rotate == nil {
		return
	}
	h.Rotate(t)
	after := mustDescribe(t, h.Provider)
	if info.LatestVersion != "" && after.LatestVersion == info.LatestVersion {
		t.Errorf("after rotation LatestVersion is still %q", after.LatestVersion)
	}
	k := mustGenerate(t, h.Provider, "sk_describe")
	if k.Wrapped.RootVersion != after.LatestVersion {
		t.Errorf("a key generated after rotation has RootVersion %q, want %q", k.Wrapped.RootVersion, after.LatestVersion)
	}
}

func testUnavailable(t *testing.T, h Harness) {
	if h.Unavailable == nil {
		t.Skip("the harness cannot make this backend unavailable")
	}
	k := mustGenerate(t, h.Provider, "sk_down")
	h.Unavailable(t)
	calls := map[string]func(ctx context.Context) error{
		"GenerateDataKey": func(ctx context.Context) error {
			_, err := h.Provider.GenerateDataKey(ctx, "sk_down")
			return err
		},
		"Unwrap": func(ctx context.Context) error {
			_, err := h.Provider.Unwrap(ctx, "sk_down", k.Wrapped)
			return err
		},
		"Rewrap": func(ctx context.Context) error {
			_, err := h.Provider.Rewrap(ctx, []vault.RewrapItem{{KeyID: "sk_down", Wrapped: k.Wrapped}})
			return err
		},
		"Describe": func(ctx context.Context) error {
			_, err := h.Provider.Describe(ctx)
			return err
		},
	}
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), unavailableDeadline)
		start := time.Now()
		err := call(ctx)
		elapsed := time.Since(start)
		cancel()
		if elapsed > unavailableDeadline+deadlineGrace {
			t.Errorf("%s took %v, past its %v deadline", name, elapsed, unavailableDeadline)
		}
		if err == nil {
			t.Errorf("%s against a dead backend succeeded", name)
			continue
		}
		wantErr(t, err, vault.ErrKeyUnavailable, secretsOf(k)...)
	}
}

func testRefused(t *testing.T, h Harness) {
	if h.Refuse == nil {
		t.Skip("the harness cannot make this backend refuse")
	}
	ctx := testContext(t)
	k := mustGenerate(t, h.Provider, "sk_refused")
	h.Refuse(t)
	_, err := h.Provider.GenerateDataKey(ctx, "sk_refused")
	wantErr(t, err, vault.ErrKeyRefused, secretsOf(k)...)
	_, err = h.Provider.Unwrap(ctx, "sk_refused", k.Wrapped)
	wantErr(t, err, vault.ErrKeyRefused, secretsOf(k)...)
	_, err = h.Provider.Rewrap(ctx, []vault.RewrapItem{{KeyID: "sk_refused", Wrapped: k.Wrapped}})
	wantErr(t, err, vault.ErrKeyRefused, secretsOf(k)...)
	_, err = h.Provider.Describe(ctx)
	wantErr(t, err, vault.ErrKeyRefused, secretsOf(k)...)
}

func testConcurrent(t *testing.T, h Harness) {
	ctx := testContext(t)
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range 4 {
				k, err := h.Provider.GenerateDataKey(ctx, "sk_concurrent")
				if err != nil {
					errs <- err
					return
				}
				got, err := h.Provider.Unwrap(ctx, "sk_concurrent", k.Wrapped)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, k.Plaintext) {
					errs <- errors.New("unwrapped key differs")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// testContext is a context for calls that should succeed quickly.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustGenerate(t *testing.T, p vault.KeyProvider, keyID string) vault.DataKey {
	t.Helper()
	k, err := p.GenerateDataKey(testContext(t), keyID)
	if err != nil {
		t.Fatalf("GenerateDataKey(%q): %v", keyID, err)
	}
	return k
}

func mustDescribe(t *testing.T, p vault.KeyProvider) vault.RootKeyInfo {
	t.Helper()
	info, err := p.Describe(testContext(t))
	if err != nil {
		t.Fatalf("Describe: %v", err)
	}
	return info
}

// secretsOf lists what must never appear in an error about k.
func secretsOf(k vault.DataKey) [][]byte {
	return [][]byte{k.Plaintext, k.Wrapped.Ciphertext}
}

// wantErr checks that err is target and that its text holds none of secrets.
func wantErr(t *testing.T, err, target error, secrets ...[]byte) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", target)
	}
	if !errors.Is(err, target) {
		t.Fatalf("got %v, want %v", err, target)
	}
	AssertNoSecret(t, err, secrets...)
	t.Logf("error as callers see it: %v", err)
}

// AssertNoSecret fails t if err's text contains any of secrets, raw or in
// the encodings an SDK or server might echo (hex, base64). Secrets shorter
// than 8 bytes are ignored: they would match by chance.
func AssertNoSecret(t *testing.T, err error, secrets ...[]byte) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	for _, s := range secrets {
		if len(s) < 8 {
			continue
		}
		for _, form := range encodings(s) {
			if strings.Contains(msg, form) {
				t.Fatalf("error text carries a secret: %q", msg)
			}
		}
	}
}

// encodings lists s in the forms it could leak in. For the base64 forms a
// prefix is checked as well, since an encoder may wrap or cut a long value.
func encodings(s []byte) []string {
	forms := []string{
		string(s),
		hex.EncodeToString(s),
		strings.ToUpper(hex.EncodeToString(s)),
		base64.StdEncoding.EncodeToString(s),
		base64.RawStdEncoding.EncodeToString(s),
		base64.URLEncoding.EncodeToString(s),
		base64.RawURLEncoding.EncodeToString(s),
	}
	if len(s) >= 24 {
		forms = append(forms, base64.RawStdEncoding.EncodeToString(s[:24]), base64.RawURLEncoding.EncodeToString(s[:24]))
	}
	return forms
}
