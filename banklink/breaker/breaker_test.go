package breaker_test

import (
	"context"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/breaker"
)

// fake is a provider whose GetAccounts fails with err and counts calls.
type fake struct {
	banklink.Provider
	calls int
	err   error
}

func (f *fake) Name() string { return "fake" }

func (f *fake) GetAccounts(context.Context, string) (banklink.ItemAccounts, error) {
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
			f := &fake{err: tt.err}
			p := breaker.New(f, breaker.Options{Failures: 3, OpenFor: time.Hour})
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
