package verification

import (
	"errors"
	"fmt"
)

// Status is where a verification stands (the transitions below are the
// whole of it; docs/ARCHITECTURE.md): pending → sent →
// posted → verified; failed once the attempts are spent; expired after the
// window; returned when the rail reports a return. An instant verification
// goes from pending to verified at once.
type Status string

// The statuses, as stored in verifications.status.
const (
	StatusPending  Status = "pending"
	StatusSent     Status = "sent"
	StatusPosted   Status = "posted"
	StatusVerified Status = "verified"
	StatusFailed   Status = "failed"
	StatusExpired  Status = "expired"
	StatusReturned Status = "returned"
)

// Open reports whether the verification can still change.
func (s Status) Open() bool {
	return s == StatusPending || s == StatusSent || s == StatusPosted
}

// EventKind names what happened to a verification.
type EventKind string

// The events the machine knows.
const (
	// EventInstantProven: the provider's auth data proved ownership.
	EventInstantProven EventKind = "instant_proven"
	// EventSent: the rail accepted the deposits.
	EventSent EventKind = "sent"
	// EventPosted: the rail reports the deposits posted to the account.
	EventPosted EventKind = "posted"
	// EventReturned: the rail reports the deposits returned.
	EventReturned EventKind = "returned"
	// EventRightAnswer and EventWrongAnswer: the user confirmed.
	EventRightAnswer EventKind = "right_answer"
	EventWrongAnswer EventKind = "wrong_answer"
	// EventDeadline: the window passed.
	EventDeadline EventKind = "deadline"
	// EventBankConfirmed, EventBankRefuted, EventBankUnconfirmed: the bank
	// answered a bank account verification: every required check true; one
	// false; one unknown (failed, but not counted towards the lock: the
	// bank said nothing against the user).
	EventBankConfirmed   EventKind = "bank_confirmed"
	EventBankRefuted     EventKind = "bank_refuted"
	EventBankUnconfirmed EventKind = "bank_unconfirmed"
	// EventProviderVerified, EventProviderFailed and EventProviderExpired:
	// the bank provider, which sent and checks its own micro-deposits
	// (Plaid's), says the account is verified, that the user used up the
	// attempts, or that its window passed (ProviderStatus).
	EventProviderVerified EventKind = "provider_verified"
	EventProviderFailed   EventKind = "provider_failed"
	EventProviderExpired  EventKind = "provider_expired"
)

// State is what the machine reads and writes.
type State struct {
	Status            Status
	AttemptsRemaining int
}

// Effect is something a transition asks its caller to do in the same
// transaction as the state change.
type Effect struct {
	// AccountStatus, when set, is the account's new verification_status.
	AccountStatus string
	// Emit, when set, is the type of event for client apps.
	Emit string
	// Uncounted: a failure that does not count towards the lock (the bank
	// could not confirm; nobody refuted anything).
	Uncounted bool
}

// Account verification statuses (accounts.verification_status).
const (
	AccountUnverified = "unverified"
	AccountPending    = "pending"
	AccountVerified   = "verified"
	AccountFailed     = "failed"
	AccountExpired    = "expired"
	AccountReturned   = "returned"
)

// Event types sent to client apps.
const (
	TypePosted   = "verification.posted"
	TypeVerified = "verification.verified"
	TypeFailed   = "verification.failed"
	TypeExpired  = "verification.expired"
	TypeReturned = "verification.returned"
)

// ErrTransition is returned (wrapped) for an event the state does not
// accept: a conflict for the caller.
var ErrTransition = errors.New("verification: transition not allowed")

// Next is the state machine: the state after ev, and what else must change
// with it. It is a pure function. A wrong answer spends one attempt and
// never goes below zero; spending the last one fails the verification.
func Next(s State, ev EventKind) (State, []Effect, error) {
	bad := func() (State, []Effect, error) {
		return s, nil, fmt.Errorf("%w: %s on %s", ErrTransition, ev, s.Status)
	}
	switch ev {
	case EventInstantProven:
		if s.Status != StatusPending {
			return bad()
		}
		return State{StatusVerified, s.AttemptsRemaining}, []Effect{{AccountStatus: AccountVerified, Emit: TypeVerified}}, nil
	case EventSent:
		if s.Status != StatusPending {
			return bad()
		}
		return State{StatusSent, s.AttemptsRemaining}, []Effect{{AccountStatus: AccountPending}}, nil
	case EventPosted:
		if s.Status != StatusSent {
			return bad()
		}
		return State{StatusPosted, s.AttemptsRemaining}, []Effect{{Emit: TypePosted}}, nil
	case EventReturned:
		if s.Status != StatusSent && s.Status != StatusPosted {
			return bad()
		}
		return State{StatusReturned, s.AttemptsRemaining}, []Effect{{AccountStatus: AccountReturned, Emit: TypeReturned}}, nil
	case EventRightAnswer:
		if s.Status != StatusPosted || s.AttemptsRemaining <= 0 {
			return bad()
		}
		return State{StatusVerified, s.AttemptsRemaining}, []Effect{{AccountStatus: AccountVerified, Emit: TypeVerified}}, nil
	case EventWrongAnswer:
		if s.Status != StatusPosted || s.AttemptsRemaining <= 0 {
			return bad()
		}
		left := s.AttemptsRemaining - 1
		if left == 0 {
			return State{StatusFailed, 0}, []Effect{{AccountStatus: AccountFailed, Emit: TypeFailed}}, nil
		}
		return State{StatusPosted, left}, nil, nil
	case EventBankConfirmed, EventBankRefuted, EventBankUnconfirmed:
		if s.Status != StatusPending {
			return bad()
		}
		if ev == EventBankConfirmed {
			return State{StatusVerified, s.AttemptsRemaining}, []Effect{{AccountStatus: AccountVerified, Emit: TypeVerified}}, nil
		}
		return State{StatusFailed, s.AttemptsRemaining}, []Effect{{AccountStatus: AccountFailed, Emit: TypeFailed,
			Uncounted: ev == EventBankUnconfirmed}}, nil
	case EventDeadline, EventProviderExpired:
		if !s.Status.Open() {
			return bad()
		}
		return State{StatusExpired, s.AttemptsRemaining}, []Effect{{AccountStatus: AccountExpired, Emit: TypeExpired}}, nil
	case EventProviderVerified:
		if !s.Status.Open() {
			return bad()
		}
		return State{StatusVerified, s.AttemptsRemaining}, []Effect{{AccountStatus: AccountVerified, Emit: TypeVerified}}, nil
	case EventProviderFailed:
		if !s.Status.Open() {
			return bad()
		}
		return State{StatusFailed, 0}, []Effect{{AccountStatus: AccountFailed, Emit: TypeFailed}}, nil
	}
	return bad()
}

// ProviderStatus is the kluis status that a provider's own micro-deposit
// verification_status (Plaid's) stands for, and false for a status that is
// no micro-deposit verification (none: instant auth; the database_* ones,
// which match a number, not an owner):
//
//	unsent                          pending   (the deposit is not sent yet)
//	pending_automatic_verification  sent      (sent; the provider checks it itself)
//	pending_manual_verification     posted    (the user confirms the code in Link)
//	automatically_verified          verified
//	manually_verified               verified
//	verification_failed             failed    (the user used up the attempts)
//	verification_expired            expired
func ProviderStatus(providerStatus string) (Status, bool) {
	st, ok := map[string]Status{
		"unsent":                         StatusPending,
		"pending_automatic_verification": StatusSent,
		"pending_manual_verification":    StatusPosted,
		"automatically_verified":         StatusVerified,
		"manually_verified":              StatusVerified,
		"verification_failed":            StatusFailed,
		"verification_expired":           StatusExpired,
	}[providerStatus]
	return st, ok
}

// ProviderPath is the events that take a provider-checked verification
// from its status to the one the provider reports: through sent and posted
// in order, or to the end the provider names. Nothing when it is there
// already, when the provider is behind it (the steps never go back), or
// when it is finished.
func ProviderPath(from, to Status) []EventKind {
	if !from.Open() || from == to {
		return nil
	}
	switch to {
	case StatusVerified:
		return []EventKind{EventProviderVerified}
	case StatusFailed:
		return []EventKind{EventProviderFailed}
	case StatusExpired:
		return []EventKind{EventProviderExpired}
	case StatusSent:
		if from == StatusPending {
			return []EventKind{EventSent}
		}
	case StatusPosted:
		if from == StatusPending {
			return []EventKind{EventSent, EventPosted}
		}
		if from == StatusSent {
			return []EventKind{EventPosted}
		}
	}
	return nil
}
