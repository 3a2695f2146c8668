package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kluis-dev/kluis/breaker"
)

var (
	errDown    = errors.New("down")
	errRefused = errors.New("refused")
)

func newBreaker(failures uint32) *breaker.Breaker {
	return breaker.New(breaker.Config{
		Name:        "test",
		Failure:     func(err error) bool { return errors.Is(err, errDown) },
		Unavailable: func(open error) error { return fmt.Errorf("%w: %w", errDown, open) },
		Metric:      "kluis_test_breaker_state",
		Help:        "State of the test breaker.",
		Labels:      prometheus.Labels{"dependency": "test"},
	}, breaker.Options{Failures: failures, OpenFor: time.Hour})
}

// The classifier decides what opens the breaker: failures do, answers and
// callers that gave up do not; an open breaker does not call and returns
// the caller's own unavailability wrapping ErrOpen.
func TestOnlyFailuresOpenTheBreaker(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantCalls int
		wantOpen  bool
	}{
		{"failures open it", errDown, 3, true},
		{"answers do not", errRefused, 10, false},
		{"callers that gave up do not", fmt.Errorf("%w: %w", errDown, context.Canceled), 10, false},
		{"successes do not", nil, 10, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBreaker(3)
			calls := 0
			var err error
			for range 10 {
				_, err = breaker.Do(b, func() (int, error) { calls++; return 1, tt.err })
			}
			if calls != tt.wantCalls || (b.State() == 2) != tt.wantOpen {
				t.Fatalf("calls %d, state %d; want %d calls, open %v", calls, b.State(), tt.wantCalls, tt.wantOpen)
			}
			if tt.wantOpen && (!errors.Is(err, breaker.ErrOpen) || !errors.Is(err, errDown)) {
				t.Fatalf("err = %v, want the caller's unavailability wrapping ErrOpen", err)
			}
		})
	}
}

func TestRunPassesTheErrorThrough(t *testing.T) {
	b := newBreaker(3)
	if err := breaker.Run(b, func() error { return errRefused }); !errors.Is(err, errRefused) {
		t.Fatalf("err = %v, want the call's own error", err)
	}
}

func TestTheStateIsALabelledGauge(t *testing.T) {
	b := newBreaker(1)
	_ = breaker.Run(b, func() error { return errDown })
	reg := prometheus.NewRegistry()
	reg.MustRegister(b.Collector())
	want := "# HELP kluis_test_breaker_state State of the test breaker.\n# TYPE kluis_test_breaker_state gauge\nkluis_test_breaker_state{dependency=\"test\"} 2\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kluis_test_breaker_state"); err != nil {
		t.Fatal(err)
	}
}
