package vault

import (
	"context"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// System keys are under the same bound as keyring keys: past
// KLUIS_KEYRING_RECHECK without the provider's confirmation, work that
// needs them fails closed (503), and it works again once the provider
// confirms them. The clock is the test's: no sleep, no timing.
func TestSystemKeysPastTheRecheckBoundAreUnavailableUntilConfirmed(t *testing.T) {
	ctx := context.Background()
	db, _ := pgtest.Open(t)
	p := newFakeProvider()
	clk := newFakeClock()
	sys, err := LoadSystemKeysWith(ctx, db, p, SystemKeyOptions{Recheck: time.Minute, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sys.Close)
	want, err := sys.MAC(SystemKeyBlindIndex, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	pseudonym := sys.Pseudonym("subject", "user-1")

	// Within the bound the provider is not needed.
	p.unavailable.Store(true)
	clk.Advance(59 * time.Second)
	if got, err := sys.MAC(SystemKeyBlindIndex, []byte("x")); err != nil || string(got) != string(want) {
		t.Fatalf("within the bound: %v", err)
	}
	// Past it, every use fails closed, and readiness says so.
	clk.Advance(2 * time.Second)
	sys.expire()
	if _, err := sys.MAC(SystemKeyBlindIndex, []byte("x")); kluis.ErrorCode(err) != kluis.EUnavailable {
		t.Fatalf("past the bound: MAC = %v, want unavailable", err)
	}
	if sys.Pseudonym("subject", "user-1") != "" || testKinds.blindIndex(sys, KindAccountNumber, "0001234567") != nil {
		t.Fatal("past the bound: a pseudonym or blind index was still made")
	}
	if _, err := sys.SignAuditHead([]byte("head")); kluis.ErrorCode(err) != kluis.EUnavailable {
		t.Fatalf("past the bound: SignAuditHead = %v", err)
	}
	clk.Advance(2 * time.Second) // one attempt a second at most
	if err := sys.Ready(ctx); kluis.ErrorCode(err) != kluis.EUnavailable {
		t.Fatalf("past the bound: Ready = %v", err)
	}
	// The provider returns: the next use (a second after the last try)
	// confirms the keys, and they are the same keys.
	p.unavailable.Store(false)
	clk.Advance(2 * time.Second)
	if got, err := sys.MAC(SystemKeyBlindIndex, []byte("x")); err != nil || string(got) != string(want) {
		t.Fatalf("after the provider's return: %v", err)
	}
	if err := sys.Ready(ctx); err != nil {
		t.Fatalf("Ready after the return: %v", err)
	}
	if sys.Pseudonym("subject", "user-1") != pseudonym {
		t.Fatal("the pseudonym changed")
	}
}

// A key the provider refuses (the root key disabled) is dropped at the
// next confirmation, before its bound.
func TestASystemKeyTheProviderRefusesIsDroppedAtOnce(t *testing.T) {
	ctx := context.Background()
	db, _ := pgtest.Open(t)
	p := newFakeProvider()
	clk := newFakeClock()
	sys, err := LoadSystemKeysWith(ctx, db, p, SystemKeyOptions{Recheck: time.Minute, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sys.Close)
	p.refuse.Store(true)
	clk.Advance(31 * time.Second) // half the bound: due
	if !sys.due() {
		t.Fatal("not due at half the bound")
	}
	if err := sys.confirm(ctx); err == nil {
		t.Fatal("a refused confirmation succeeded")
	}
	if _, err := sys.MAC(SystemKeyBlindIndex, []byte("x")); kluis.ErrorCode(err) != kluis.EUnavailable {
		t.Fatalf("after a refusal: %v, want unavailable", err)
	}
	calls := sys.ProviderCalls()
	// Uses within the second do not ask the provider again.
	for range 10 {
		_, _ = sys.MAC(SystemKeyBlindIndex, []byte("x"))
	}
	if got := sys.ProviderCalls(); got != calls {
		t.Fatalf("10 uses within a second made %d provider calls", got-calls)
	}
}

// RunRecheck stops when its context ends.
func TestSystemKeysRecheckStopsWithItsContext(t *testing.T) {
	db, _ := pgtest.Open(t)
	sys, err := LoadSystemKeys(context.Background(), db, newFakeProvider())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sys.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sys.RunRecheck(ctx) }()
	cancel()
	<-done
}
