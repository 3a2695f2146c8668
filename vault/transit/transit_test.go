package transit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/transit"
	"github.com/kluis-dev/kluis/vault/transit/transittest"
	"github.com/kluis-dev/kluis/vault/vaulttest"
)

// derivedKey is a Transit key created with derived=true, which binds each
// wrapped key to its context.
const derivedKey = "kluis-derived"

// newProvider builds a provider against srv with fast retries, closed with
// the test.
func newProvider(t testing.TB, srv *transittest.Server, key string, opts ...transit.Option) *transit.Provider {
	t.Helper()
	base := []transit.Option{
		transit.WithAddress(srv.URL),
		transit.WithToken(transittest.DefaultToken),
		transit.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		transit.WithConfig(func(c *api.Config) {
			c.MaxRetries = 1
			c.MinRetryWait = 5 * time.Millisecond
			c.MaxRetryWait = 10 * time.Millisecond
		}),
	}
	p, err := transit.New(srv.Mount, key, append(base, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func harness(t *testing.T, key string, derived bool) vaulttest.Harness {
	t.Helper()
	srv := transittest.NewServer(t)
	if key != transittest.DefaultKey {
		srv.CreateKey(key, "aes256-gcm96", derived)
	}
	h := vaulttest.Harness{
		Provider:     newProvider(t, srv, key),
		ProviderName: "transit",
		Rotate:       func(*testing.T) { srv.Rotate(key) },
		Unavailable:  func(*testing.T) { srv.Stop() },
		Refuse:       func(*testing.T) { srv.SetToken("another-token", 0, false) },
	}
	if !derived {
		h.Unbound = "a Transit key that is not derived ignores the context: the binding comes from the envelope's additional data"
	}
	return h
}

func TestContractWithADerivedKey(t *testing.T) {
	vaulttest.TestProvider(t, func(t *testing.T) vaulttest.Harness { return harness(t, derivedKey, true) })
}

func TestContractWithAPlainKey(t *testing.T) {
	vaulttest.TestProvider(t, func(t *testing.T) vaulttest.Harness {
		return harness(t, transittest.DefaultKey, false)
	})
}

func TestASealedVaultIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := transittest.NewServer(t)
	p := newProvider(t, srv, transittest.DefaultKey)
	k, err := p.GenerateDataKey(ctx, "sk_1")
	if err != nil {
		t.Fatal(err)
	}
	srv.Seal(true)
	_, err = p.Unwrap(ctx, "sk_1", k.Wrapped)
	if !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Fatalf("Unwrap from a sealed Vault: %v, want ErrKeyUnavailable", err)
	}
	if !strings.Contains(err.Error(), "sealed") {
		t.Errorf("error %q does not say Vault is sealed", err)
	}
	vaulttest.AssertNoSecret(t, err, k.Plaintext, k.Wrapped.Ciphertext)
	srv.Seal(false)
	if _, err := p.Unwrap(ctx, "sk_1", k.Wrapped); err != nil {
		t.Fatalf("Unwrap after unsealing: %v", err)
	}
}

func TestAnUnreachableVaultIsUnavailable(t *testing.T) {
	t.Parallel()
	srv := transittest.NewServer(t)
	p := newProvider(t, srv, transittest.DefaultKey)
	srv.Stop()
	_, err := p.GenerateDataKey(context.Background(), "sk_1")
	if !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Fatalf("GenerateDataKey against a stopped Vault: %v, want ErrKeyUnavailable", err)
	}
}

func TestASlowVaultTimesOutWithinTheDeadline(t *testing.T) {
	t.Parallel()
	srv := transittest.NewServer(t)
	p := newProvider(t, srv, transittest.DefaultKey)
	srv.SetLatency(time.Minute)
	const deadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	_, err := p.Describe(ctx)
	elapsed := time.Since(start)
	if !errors.Is(err, vault.ErrKeyUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Describe against a slow Vault: %v, want ErrKeyUnavailable and DeadlineExceeded", err)
	}
	// Generous: the point is that the call does not hang, not its speed.
	if elapsed > deadline+5*time.Second {
		t.Fatalf("Describe returned after %v, deadline %v", elapsed, deadline)
	}
}

func TestTheClientTimeoutBoundsACallWithoutDeadline(t *testing.T) {
	t.Parallel()
	srv := transittest.NewServer(t)
	p := newProvider(t, srv, transittest.DefaultKey, transit.WithTimeout(200*time.Millisecond))
	srv.SetLatency(time.Minute)
	if _, err := p.GenerateDataKey(context.Background(), "sk_1"); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Fatalf("GenerateDataKey against a slow Vault: %v, want ErrKeyUnavailable", err)
	}
}

func TestABadTokenIsRefused(t *testing.T) {
	t.Parallel()
	srv := transittest.NewServer(t)
	p := newProvider(t, srv, transittest.DefaultKey, transit.WithToken("wrong"))
	_, err := p.GenerateDataKey(context.Background(), "sk_1")
	if !errors.Is(err, vault.ErrKeyRefused) {
		t.Fatalf("GenerateDataKey with a bad token: %v, want ErrKeyRefused", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Fatalf("error %q carries the token", err)
	}
}

func TestDescribeRefusesAKeyKluisCannotUse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, key, typ string
	}{
		{"an RSA key", "rsa", "rsa-2048"},
		{"a ChaCha20 key", "chacha", "chacha20-poly1305"},
		{"an HMAC key", "hmac", "hmac"},
		{"a key that does not exist", "absent", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := transittest.NewServer(t)
			if tt.typ != "" {
				srv.CreateKey(tt.key, tt.typ, false)
			}
			_, err := newProvider(t, srv, tt.key).Describe(context.Background())
			if !errors.Is(err, vault.ErrKeyRefused) {
				t.Fatalf("Describe: %v, want ErrKeyRefused", err)
			}
		})
	}
}

func TestDescribeAcceptsAES128(t *testing.T) {
	t.Parallel()
	srv := transittest.NewServer(t)
	srv.CreateKey("aes128", "aes128-gcm96", false)
	info, err := newProvider(t, srv, "aes128").Describe(context.Background())
	if err != nil {
		t.Fatalf("Describe: %v", err)
	}
	if info.KeyID != "transit/aes128" || info.LatestVersion != "1" {
		t.Fatalf("Describe = %+v", info)
	}
}

func TestRewrapSendsBatchesAndKeepsOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := transittest.NewServer(t)
	p := newProvider(t, srv, transittest.DefaultKey, transit.WithBatchSize(2))
	var items []vault.RewrapItem
	var plain [][]byte
	for i := range 5 {
		id := fmt.Sprintf("sk_%d", i)
		k, err := p.GenerateDataKey(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, vault.RewrapItem{KeyID: id, Wrapped: k.Wrapped})
		plain = append(plain, k.Plaintext)
	}
	srv.Rotate(transittest.DefaultKey)
	srv.Rotate(transittest.DefaultKey)
	got, err := p.Rewrap(ctx, items)
	if err != nil {
		t.Fatalf("Rewrap: %v", err)
	}
	if n := srv.Calls(transittest.CallRewrap); n != 3 {
		t.Fatalf("rewrap requests = %d, want 3 for 5 keys in batches of 2", n)
	}
	for i := range items {
		if got[i].RootVersion != "3" || !bytes.HasPrefix(got[i].Ciphertext, []byte("vault:v3:")) {
			t.Errorf("item %d: RootVersion %q, ciphertext prefix %q; want version 3", i, got[i].RootVersion, got[i].Ciphertext[:9])
		}
		pt, err := p.Unwrap(ctx, items[i].KeyID, got[i])
		if err != nil || !bytes.Equal(pt, plain[i]) {
			t.Fatalf("item %d: Unwrap after Rewrap: err %v, same key %v", i, err, bytes.Equal(pt, plain[i]))
		}
	}
}

func TestRewrapNamesTheItemVaultRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := transittest.NewServer(t)
	p := newProvider(t, srv, transittest.DefaultKey)
	a, err := p.GenerateDataKey(ctx, "sk_a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.GenerateDataKey(ctx, "sk_b")
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(b.Wrapped.Ciphertext)
	tampered[len(tampered)/2] ^= 0x01
	_, err = p.Rewrap(ctx, []vault.RewrapItem{
		{KeyID: "sk_a", Wrapped: a.Wrapped},
		{KeyID: "sk_b", Wrapped: vault.WrappedKey{Ciphertext: tampered, RootVersion: b.Wrapped.RootVersion}},
	})
	if !errors.Is(err, vault.ErrKeyRefused) || !strings.Contains(err.Error(), "item 1") {
		t.Fatalf("Rewrap with a tampered second item: %v, want ErrKeyRefused naming item 1", err)
	}
	vaulttest.AssertNoSecret(t, err, a.Plaintext, b.Plaintext, a.Wrapped.Ciphertext, tampered)
}

func TestAStoredVersionThatContradictsTheCiphertextIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := transittest.NewServer(t)
	p := newProvider(t, srv, transittest.DefaultKey)
	k, err := p.GenerateDataKey(ctx, "sk_1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Unwrap(ctx, "sk_1", vault.WrappedKey{Ciphertext: k.Wrapped.Ciphertext, RootVersion: "7"})
	if !errors.Is(err, vault.ErrKeyRefused) {
		t.Fatalf("Unwrap: %v, want ErrKeyRefused", err)
	}
	if n := srv.Calls(transittest.CallDecrypt); n != 0 {
		t.Fatalf("decrypt requests = %d, want 0: the mismatch is caught before asking Vault", n)
	}
}

func TestARenewableTokenIsRenewedUntilClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := transittest.NewServer(t)
	srv.SetToken("renewable-token", 2*time.Second, true)
	p := newProvider(t, srv, transittest.DefaultKey, transit.WithToken("renewable-token"))
	// The watcher renews at once, then again before the 2 s TTL runs out;
	// three renewals mean the token outlived its first TTL.
	waitFor(t, 15*time.Second, func() bool { return srv.Calls(transittest.CallRenewSelf) >= 3 })
	if _, err := p.GenerateDataKey(ctx, "sk_1"); err != nil {
		t.Fatalf("GenerateDataKey with a renewed token: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// Close waits for renewal to end, so the count is final.
	after := srv.Calls(transittest.CallRenewSelf)
	time.Sleep(100 * time.Millisecond)
	if got := srv.Calls(transittest.CallRenewSelf); got != after {
		t.Fatalf("renewals went on after Close: %d, then %d", after, got)
	}
}

func TestRenewalStopsWithItsContext(t *testing.T) {
	t.Parallel()
	srv := transittest.NewServer(t)
	srv.SetToken("renewable-token", time.Hour, true)
	ctx, cancel := context.WithCancel(context.Background())
	p := newProvider(t, srv, transittest.DefaultKey, transit.WithToken("renewable-token"), transit.WithContext(ctx))
	waitFor(t, 10*time.Second, func() bool { return srv.Calls(transittest.CallRenewSelf) >= 1 })
	cancel()
	// Close returns only once renewal has ended; with the context gone it
	// has nothing left to stop.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestATokenThatCannotRenewIsLeftAlone(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		ttl       time.Duration
		renewable bool
	}{
		{"a root token without TTL", 0, false},
		{"a token that is not renewable", time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := transittest.NewServer(t)
			srv.SetToken("tok", tt.ttl, tt.renewable)
			p := newProvider(t, srv, transittest.DefaultKey, transit.WithToken("tok"))
			waitFor(t, 10*time.Second, func() bool { return srv.Calls(transittest.CallLookupSelf) >= 1 })
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if n := srv.Calls(transittest.CallRenewSelf); n != 0 {
				t.Fatalf("renew-self calls = %d, want 0", n)
			}
		})
	}
}

func TestCloseIsSafeTwice(t *testing.T) {
	t.Parallel()
	p := newProvider(t, transittest.NewServer(t), transittest.DefaultKey)
	p.Close()
	p.Close()
}

func TestNewReadsTheVaultEnvironment(t *testing.T) {
	// t.Setenv: not parallel.
	srv := transittest.NewServer(t)
	t.Setenv("VAULT_ADDR", srv.URL)
	t.Setenv("VAULT_TOKEN", transittest.DefaultToken)
	t.Setenv("VAULT_CACERT", "")
	p, err := transit.New("transit", "kluis")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer p.Close()
	info, err := p.Describe(context.Background())
	if err != nil {
		t.Fatalf("Describe through VAULT_ADDR: %v", err)
	}
	if info.Provider != "transit" || info.KeyID != "transit/kluis" || info.LatestVersion != "1" {
		t.Fatalf("Describe = %+v", info)
	}
}

func TestNewRefusesBadConfiguration(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "")
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	tests := []struct {
		name, mount, key string
		opts             []transit.Option
	}{
		{"no token", "transit", "kluis", nil},
		{"an empty key name", "transit", "", []transit.Option{transit.WithToken("t")}},
		{"a key name with a slash", "transit", "a/b", []transit.Option{transit.WithToken("t")}},
		{"a mount that climbs", "../sys", "kluis", []transit.Option{transit.WithToken("t")}},
		{"an empty mount", "", "kluis", []transit.Option{transit.WithToken("t")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := transit.New(tt.mount, tt.key, tt.opts...)
			if err == nil {
				p.Close()
				t.Fatal("New succeeded")
			}
		})
	}
}

// waitFor polls cond until it holds or the bound passes. The bound is only a
// guard against a hang; the test asserts cond, not the time it took.
func waitFor(t *testing.T, bound time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// vault/api cancels a raw write's context as soon as the call returns: an
// answer whose body was still on its way then failed to read, and kluis
// keys rotate failed with "key provider unavailable" whenever a rewrap
// batch's answer arrived in more than one piece (about half of the runs
// while kluis served). Every call must read its whole answer, however it
// arrives, within its own deadline.
func TestAnAnswerThatArrivesInPiecesIsReadWhole(t *testing.T) {
	t.Parallel()
	srv := transittest.NewServer(t)
	p := newProvider(t, srv, transittest.DefaultKey, transit.WithTimeout(10*time.Second))
	ctx := context.Background()
	dk, err := p.GenerateDataKey(ctx, "sub_1/v1")
	if err != nil {
		t.Fatal(err)
	}
	srv.Rotate(transittest.DefaultKey)
	srv.SetSlowAnswers(100 * time.Millisecond)

	if _, err := p.Describe(ctx); err != nil {
		t.Fatalf("Describe: %v", err)
	}
	if _, err := p.GenerateDataKey(ctx, "sub_2/v1"); err != nil {
		t.Fatalf("GenerateDataKey: %v", err)
	}
	key, err := p.Unwrap(ctx, "sub_1/v1", dk.Wrapped)
	if err != nil || !bytes.Equal(key, dk.Plaintext) {
		t.Fatalf("Unwrap: %v", err)
	}
	items := make([]vault.RewrapItem, 50)
	for i := range items {
		items[i] = vault.RewrapItem{KeyID: "sub_1/v1", Wrapped: dk.Wrapped}
	}
	out, err := p.Rewrap(ctx, items)
	if err != nil || len(out) != len(items) || out[0].RootVersion != "2" {
		t.Fatalf("Rewrap: %d keys, %v", len(out), err)
	}
}

// The deadline covers reading the answer too: a body that stops halfway
// is unavailability within the call's timeout, named as such.
func TestAnAnswerCutShortByTheDeadlineIsUnavailable(t *testing.T) {
	t.Parallel()
	srv := transittest.NewServer(t)
	p := newProvider(t, srv, transittest.DefaultKey, transit.WithTimeout(200*time.Millisecond))
	srv.SetSlowAnswers(time.Minute)
	_, err := p.GenerateDataKey(context.Background(), "sub_1/v1")
	var pe *vault.ProviderError
	if !errors.Is(err, vault.ErrKeyUnavailable) || !errors.As(err, &pe) || !strings.Contains(pe.What, "timed out") {
		t.Fatalf("GenerateDataKey with an answer that stops halfway: %v, want a timed-out ProviderError", err)
	}
}
