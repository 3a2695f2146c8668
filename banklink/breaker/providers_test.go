package breaker_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/breaker"
)

// namedFake is fake under a name of its own.
type namedFake struct {
	fake
	name string
}

func (f *namedFake) Name() string { return f.name }

// With several providers each has its breaker: one that is down opens its
// own and leaves the other serving, and /metrics shows one gauge per
// provider, labelled by name.
func TestEachProviderHasItsOwnBreakerAndGauge(t *testing.T) {
	down := &namedFake{fake: fake{err: kluis.Unavailable("plaid", nil)}, name: "plaid"}
	up := &namedFake{name: "stitch"}
	pd, pu := breaker.New(down, breaker.Options{Failures: 3, OpenFor: time.Hour}), breaker.New(up, breaker.Options{Failures: 3, OpenFor: time.Hour})
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
