package vault_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kluis-dev/kluis/breaker"
	"github.com/kluis-dev/kluis/vault"
)

// flakyKeys is a provider whose Describe returns err and counts calls.
type flakyKeys struct {
	vault.KeyProvider
	calls atomic.Int64
	err   atomic.Value // error
}

func (f *flakyKeys) set(err error) { f.err.Store(&err) }

func (f *flakyKeys) Describe(context.Context) (vault.RootKeyInfo, error) {
	f.calls.Add(1)
	if e, _ := f.err.Load().(*error); e != nil && *e != nil {
		return vault.RootKeyInfo{}, *e
	}
	return vault.RootKeyInfo{Provider: "fake"}, nil
}

func describeN(p vault.KeyProvider, n int) error {
	var err error
	for i := 0; i < n; i++ {
		_, err = p.Describe(context.Background())
	}
	return err
}

func TestUnavailabilityOpensTheBreakerAndCallsStop(t *testing.T) {
	f := &flakyKeys{}
	f.set(fmt.Errorf("%w: connection refused", vault.ErrKeyUnavailable))
	p := vault.GuardKeyProvider(f, breaker.Options{Failures: 3, OpenFor: time.Hour})
	err := describeN(p, 10)
	if !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Fatalf("err = %v, want ErrKeyUnavailable", err)
	}
	if n := f.calls.Load(); n != 3 {
		t.Fatalf("provider called %d times, want 3: an open breaker does not call", n)
	}
	if p.State() != 2 {
		t.Fatalf("state = %d, want 2 (open)", p.State())
	}
}

func TestRefusalsDoNotOpenTheBreaker(t *testing.T) {
	f := &flakyKeys{}
	f.set(fmt.Errorf("%w: access denied", vault.ErrKeyRefused))
	p := vault.GuardKeyProvider(f, breaker.Options{Failures: 3, OpenFor: time.Hour})
	err := describeN(p, 10)
	if !errors.Is(err, vault.ErrKeyRefused) || f.calls.Load() != 10 || p.State() != 0 {
		t.Fatalf("err %v, calls %d, state %d; want every refusal passed through and the breaker closed", err, f.calls.Load(), p.State())
	}
}

func TestCallersThatGiveUpDoNotCount(t *testing.T) {
	f := &flakyKeys{}
	f.set(fmt.Errorf("%w: %w", vault.ErrKeyUnavailable, context.Canceled))
	p := vault.GuardKeyProvider(f, breaker.Options{Failures: 3, OpenFor: time.Hour})
	if describeN(p, 10); p.State() != 0 {
		t.Fatalf("state = %d, want closed: cancelled callers are not provider failures", p.State())
	}
}

func TestTheBreakerClosesAgainWhenTheProviderRecovers(t *testing.T) {
	f := &flakyKeys{}
	f.set(fmt.Errorf("%w: timeout", vault.ErrKeyUnavailable))
	p := vault.GuardKeyProvider(f, breaker.Options{Failures: 2, OpenFor: 20 * time.Millisecond})
	describeN(p, 2)
	if p.State() != 2 {
		t.Fatalf("state = %d, want open", p.State())
	}
	f.set(nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := p.Describe(context.Background()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the breaker did not let a trial call through")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p.State() != 0 {
		t.Fatalf("state = %d, want closed after a successful trial", p.State())
	}
}

func TestTheStateIsAGauge(t *testing.T) {
	f := &flakyKeys{}
	f.set(fmt.Errorf("%w: down", vault.ErrKeyUnavailable))
	p := vault.GuardKeyProvider(f, breaker.Options{Failures: 1, OpenFor: time.Hour})
	reg := prometheus.NewRegistry()
	reg.MustRegister(p.Collector())
	describeN(p, 1)
	want := "# HELP kluis_key_provider_breaker_state State of the key provider's circuit breaker: 0 closed, 1 half-open, 2 open.\n# TYPE kluis_key_provider_breaker_state gauge\nkluis_key_provider_breaker_state 2\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kluis_key_provider_breaker_state"); err != nil {
		t.Fatal(err)
	}
}
