package banklink_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/breaker"
)

// flakyProvider is a provider whose GetAccounts fails with err and counts calls.
type flakyProvider struct {
	banklink.Provider
	calls int
	err   error
}

func (f *flakyProvider) Name() string { return "fake" }

func (f *flakyProvider) GetAccounts(context.Context, string) (banklink.ItemAccounts, error) {
	f.calls++
	return banklink.ItemAccounts{}, f.err
}

func TestOnlyTheProvidersUnavailabilityOpensTheBreaker(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantCalls int
		wantOpen  bool
	}{
		{"unavailable opens it", kluis.Unavailable("plaid", nil), 3, true},
		{"an institution that is down does not", kluis.Errorf(banklink.CodeInstitutionDown, "down"), 10, false},
		{"a bad token does not", kluis.Errorf(banklink.CodeInvalidToken, "bad"), 10, false},
		{"the provider's rate limit does not", kluis.Errorf(banklink.CodeRateLimited, "slow down"), 10, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &flakyProvider{err: tt.err}
			p := banklink.GuardProvider(f, breaker.Options{Failures: 3, OpenFor: time.Hour})
			var err error
			for i := 0; i < 10; i++ {
				_, err = p.GetAccounts(context.Background(), "tok")
			}
			if f.calls != tt.wantCalls || (p.State() == 2) != tt.wantOpen {
				t.Fatalf("calls %d, state %d; want %d calls, open %v", f.calls, p.State(), tt.wantCalls, tt.wantOpen)
			}
			if tt.wantOpen && kluis.ErrorCode(err) != kluis.EUnavailable {
				t.Fatalf("err = %v, want unavailable from the open breaker", err)
			}
		})
	}
}

// namedFlaky is flakyProvider under a name of its own.
type namedFlaky struct {
	flakyProvider
	name string
}

func (f *namedFlaky) Name() string { return f.name }

// With several providers each has its breaker: one that is down opens its
// own and leaves the other serving, and /metrics shows one gauge per
// provider, labelled by name.
func TestEachProviderHasItsOwnBreakerAndGauge(t *testing.T) {
	down := &namedFlaky{flakyProvider: flakyProvider{err: kluis.Unavailable("plaid", nil)}, name: "plaid"}
	up := &namedFlaky{name: "stitch"}
	pd, pu := banklink.GuardProvider(down, breaker.Options{Failures: 3, OpenFor: time.Hour}), banklink.GuardProvider(up, breaker.Options{Failures: 3, OpenFor: time.Hour})
	if _, err := banklink.NewProviders(pd, pu); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		_, _ = pd.GetAccounts(context.Background(), "tok")
		if _, err := pu.GetAccounts(context.Background(), "tok"); err != nil {
			t.Fatalf("the provider that is up failed: %v", err)
		}
	}
	if pd.State() != 2 || pu.State() != 0 {
		t.Fatalf("states = %d (down), %d (up); want 2 and 0", pd.State(), pu.State())
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(pd.Collector(), pu.Collector())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "kluis_bank_provider_breaker_state" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "provider" {
					got[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	if len(got) != 2 || got["plaid"] != 2 || got["stitch"] != 0 {
		t.Fatalf("breaker gauges = %v, want plaid 2 and stitch 0", got)
	}
}
