package verification

import (
	"errors"
	"reflect"
	"testing"
)

func TestNext(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		from    State
		ev      EventKind
		want    State
		effects []Effect
		bad     bool
	}{
		{"instant proof verifies a pending verification", State{StatusPending, 3}, EventInstantProven, State{StatusVerified, 3},
			[]Effect{{AccountStatus: AccountVerified, Emit: TypeVerified}}, false},
		{"sending moves pending to sent and the account to pending", State{StatusPending, 3}, EventSent, State{StatusSent, 3},
			[]Effect{{AccountStatus: AccountPending}}, false},
		{"posting moves sent to posted and tells the app", State{StatusSent, 3}, EventPosted, State{StatusPosted, 3},
			[]Effect{{Emit: TypePosted}}, false},
		{"the right answer verifies", State{StatusPosted, 1}, EventRightAnswer, State{StatusVerified, 1},
			[]Effect{{AccountStatus: AccountVerified, Emit: TypeVerified}}, false},
		{"a wrong answer spends one attempt", State{StatusPosted, 3}, EventWrongAnswer, State{StatusPosted, 2}, nil, false},
		{"the last wrong answer fails it", State{StatusPosted, 1}, EventWrongAnswer, State{StatusFailed, 0},
			[]Effect{{AccountStatus: AccountFailed, Emit: TypeFailed}}, false},
		{"no attempts left is never spent below zero", State{StatusPosted, 0}, EventWrongAnswer, State{StatusPosted, 0}, nil, true},
		{"no attempts left takes no right answer either", State{StatusPosted, 0}, EventRightAnswer, State{StatusPosted, 0}, nil, true},
		{"an answer before posting is refused", State{StatusSent, 3}, EventRightAnswer, State{StatusSent, 3}, nil, true},
		{"an answer after failing is refused", State{StatusFailed, 0}, EventRightAnswer, State{StatusFailed, 0}, nil, true},
		{"an answer after verifying is refused", State{StatusVerified, 3}, EventWrongAnswer, State{StatusVerified, 3}, nil, true},
		{"an answer after expiry is refused", State{StatusExpired, 3}, EventRightAnswer, State{StatusExpired, 3}, nil, true},
		{"a return of sent deposits", State{StatusSent, 3}, EventReturned, State{StatusReturned, 3},
			[]Effect{{AccountStatus: AccountReturned, Emit: TypeReturned}}, false},
		{"a return of posted deposits", State{StatusPosted, 2}, EventReturned, State{StatusReturned, 2},
			[]Effect{{AccountStatus: AccountReturned, Emit: TypeReturned}}, false},
		{"a return after verifying changes nothing", State{StatusVerified, 3}, EventReturned, State{StatusVerified, 3}, nil, true},
		{"the deadline expires a posted verification", State{StatusPosted, 2}, EventDeadline, State{StatusExpired, 2},
			[]Effect{{AccountStatus: AccountExpired, Emit: TypeExpired}}, false},
		{"the deadline expires a pending one", State{StatusPending, 3}, EventDeadline, State{StatusExpired, 3},
			[]Effect{{AccountStatus: AccountExpired, Emit: TypeExpired}}, false},
		{"the deadline leaves a verified one alone", State{StatusVerified, 3}, EventDeadline, State{StatusVerified, 3}, nil, true},
		{"posting twice is refused", State{StatusPosted, 3}, EventPosted, State{StatusPosted, 3}, nil, true},
		{"instant proof of a sent verification is refused", State{StatusSent, 3}, EventInstantProven, State{StatusSent, 3}, nil, true},
		{"an unknown event is refused", State{StatusPosted, 3}, EventKind("reboot"), State{StatusPosted, 3}, nil, true},
		{"the provider's verdict verifies a sent verification", State{StatusSent, 3}, EventProviderVerified, State{StatusVerified, 3},
			[]Effect{{AccountStatus: AccountVerified, Emit: TypeVerified}}, false},
		{"the provider's failure fails a posted one", State{StatusPosted, 3}, EventProviderFailed, State{StatusFailed, 0},
			[]Effect{{AccountStatus: AccountFailed, Emit: TypeFailed}}, false},
		{"the provider's expiry expires a sent one", State{StatusSent, 3}, EventProviderExpired, State{StatusExpired, 3},
			[]Effect{{AccountStatus: AccountExpired, Emit: TypeExpired}}, false},
		{"the provider cannot reopen a failed one", State{StatusFailed, 0}, EventProviderVerified, State{StatusFailed, 0}, nil, true},
		{"the provider cannot fail a verified one", State{StatusVerified, 3}, EventProviderFailed, State{StatusVerified, 3}, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, effects, err := Next(tc.from, tc.ev)
			if tc.bad {
				if !errors.Is(err, ErrTransition) {
					t.Fatalf("err = %v, want ErrTransition", err)
				}
			} else if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got != tc.want {
				t.Fatalf("state = %+v, want %+v", got, tc.want)
			}
			if !reflect.DeepEqual(effects, tc.effects) {
				t.Fatalf("effects = %+v, want %+v", effects, tc.effects)
			}
		})
	}
}

func TestAttemptsNeverGoBelowZero(t *testing.T) {
	t.Parallel()
	s := State{StatusPosted, 3}
	for i := 0; i < 10; i++ {
		next, _, err := Next(s, EventWrongAnswer)
		if err != nil {
			break
		}
		s = next
	}
	if s != (State{StatusFailed, 0}) {
		t.Fatalf("after ten wrong answers: %+v, want failed with 0", s)
	}
}

func TestProviderStatusesWalkTheMachine(t *testing.T) {
	t.Parallel()
	cases := []struct {
		provider string
		from     Status
		want     Status
	}{
		{"unsent", StatusPending, StatusPending},
		{"pending_automatic_verification", StatusPending, StatusSent},
		{"pending_manual_verification", StatusPending, StatusPosted},
		{"pending_manual_verification", StatusSent, StatusPosted},
		{"automatically_verified", StatusSent, StatusVerified},
		{"manually_verified", StatusPosted, StatusVerified},
		{"verification_failed", StatusPosted, StatusFailed},
		{"verification_expired", StatusSent, StatusExpired},
		{"pending_automatic_verification", StatusPosted, StatusPosted}, // never back
		{"unsent", StatusSent, StatusSent},
		{"manually_verified", StatusFailed, StatusFailed}, // finished stays finished
	}
	for _, tc := range cases {
		target, ok := ProviderStatus(tc.provider)
		if !ok {
			t.Fatalf("%s is not a micro-deposit status", tc.provider)
		}
		s := State{tc.from, 3}
		for _, ev := range ProviderPath(tc.from, target) {
			next, _, err := Next(s, ev)
			if err != nil {
				t.Fatalf("%s from %s: %v", tc.provider, tc.from, err)
			}
			s = next
		}
		if s.Status != tc.want {
			t.Errorf("%s from %s: %s, want %s", tc.provider, tc.from, s.Status, tc.want)
		}
	}
	for _, none := range []string{"", "database_matched", "database_insights_pass", "something_new"} {
		if _, ok := ProviderStatus(none); ok {
			t.Errorf("%q taken as a micro-deposit status", none)
		}
	}
}
