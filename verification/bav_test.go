package verification

import (
	"errors"
	"strings"
	"testing"
)

func TestTheBanksAnswerMovesOnlyAPendingVerification(t *testing.T) {
	for _, tc := range []struct {
		name      string
		from      Status
		ev        EventKind
		want      Status
		uncounted bool
		bad       bool
	}{
		{"every required check true verifies", StatusPending, EventBankConfirmed, StatusVerified, false, false},
		{"a required check false fails, counted", StatusPending, EventBankRefuted, StatusFailed, false, false},
		{"a required check unknown fails, not counted", StatusPending, EventBankUnconfirmed, StatusFailed, true, false},
		{"an answer after the deadline changes nothing", StatusExpired, EventBankConfirmed, StatusExpired, false, true},
		{"an answer to a verified one changes nothing", StatusVerified, EventBankRefuted, StatusVerified, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, effects, err := Next(State{Status: tc.from, AttemptsRemaining: 3}, tc.ev)
			if tc.bad {
				if !errors.Is(err, ErrTransition) || got.Status != tc.from {
					t.Fatalf("got %v, %v; want a refused transition", got, err)
				}
				return
			}
			if err != nil || got.Status != tc.want || uncounted(effects) != tc.uncounted {
				t.Fatalf("got %v %+v %v", got, effects, err)
			}
		})
	}
}

func TestTheRequiredChecksDecideTheOutcome(t *testing.T) {
	yes, no := true, false
	all := Checks{AccountExists: &yes, AccountOpen: &yes, AcceptsDebits: &yes, AcceptsCredits: &yes, IDNumberMatches: &yes, NameMatches: &yes}
	s := &Service{requiredChecks: DefaultRequiredChecks}
	nameOff := all
	nameOff.NameMatches = &no
	idUnknown := all
	idUnknown.IDNumberMatches = nil
	closed := all
	closed.AccountOpen = &no
	for _, tc := range []struct {
		name string
		c    Checks
		want EventKind
	}{
		{"all true", all, EventBankConfirmed},
		{"a name mismatch when the name is not required", nameOff, EventBankConfirmed},
		{"an unknown ID number", idUnknown, EventBankUnconfirmed},
		{"a closed account", closed, EventBankRefuted},
		{"nothing known", Checks{}, EventBankUnconfirmed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.outcome(tc.c); got != tc.want {
				t.Fatalf("outcome = %s, want %s", got, tc.want)
			}
		})
	}
	s.requiredChecks = []string{CheckNameMatches}
	if s.outcome(nameOff) != EventBankRefuted {
		t.Fatal("a required name that does not match did not refute")
	}
}

func TestRequiredChecksAreParsed(t *testing.T) {
	got, err := ParseRequiredChecks(" account_exists , name_matches ")
	if err != nil || strings.Join(got, ",") != "account_exists,name_matches" {
		t.Fatalf("got %v %v", got, err)
	}
	if got, _ := ParseRequiredChecks(""); strings.Join(got, ",") != strings.Join(DefaultRequiredChecks, ",") {
		t.Fatalf("empty = %v", got)
	}
	for _, bad := range []string{"balance", "account_exists,account_exists"} {
		if _, err := ParseRequiredChecks(bad); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}
