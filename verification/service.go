// Package verification proves that a user owns a bank account before money
// moves: instantly, where the bank-data provider's auth data for a linked
// account proves it, otherwise by micro-deposits sent over a payment rail
// (Rail) that the user reads off their statement and confirms. It also takes
// manual entry of accounts (numbers sealed in the vault).
//
// The state machine (Next) is a pure function; every transition is one
// conditional UPDATE with its audit entry and its event for client apps
// (package events) in the same transaction. Only a keyed HMAC of the
// amounts or code is stored, bound to the verification, and answers are
// compared in constant time.
package verification

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
)

// MACer computes keyed MACs under a named system key (vault.SystemKeys).
type MACer interface {
	MAC(name string, parts ...[]byte) ([]byte, error)
}

// Methods a caller may ask for; auto picks instant where the institution
// supports it and micro-deposits otherwise.
const (
	MethodAuto          = "auto"
	MethodInstant       = "instant"
	MethodMicroDeposits = "micro_deposits"
)

// Answer kinds of micro-deposits: two amounts, or one deposit whose
// descriptor carries a short code.
const (
	AnswerAmounts = "amounts"
	AnswerCode    = "code"
)

// Specific error codes (the api maps them to statuses).
const (
	// CodeMismatch: a wrong answer; the error carries attempts_remaining.
	CodeMismatch = "verification_mismatch"
	// CodeInstantUnsupported: instant verification was asked for an
	// account whose institution cannot prove ownership at once.
	CodeInstantUnsupported = "instant_verification_unsupported"
	// CodeMicroDepositsUnavailable: no payment rail is configured.
	CodeMicroDepositsUnavailable = "micro_deposits_unavailable"
	// CodeLocked: the account (or another of the user's accounts with its
	// number) failed LockAfterFailures verifications within the lockout;
	// the error carries locked_until. Instant verification stays open.
	CodeLocked = "verification_locked"
	// CodeNumberVelocity: the account number failed too many
	// verifications, across users, within the lockout; the error carries
	// retry_after_seconds (a 429).
	CodeNumberVelocity = "account_number_velocity"
)

// Defaults (README, the KLUIS_VERIFICATION_* settings).
const (
	DefaultAttempts = 3
	DefaultWindow   = 10 * 24 * time.Hour
	// DefaultLockout is how long failed verifications count against an
	// account and its number (KLUIS_VERIFICATION_LOCKOUT).
	DefaultLockout = 30 * 24 * time.Hour
	// DefaultNumberFailures is how many failed verifications of one
	// account number, across users, stop new ones within the lockout
	// (KLUIS_VERIFICATION_NUMBER_FAILURES).
	DefaultNumberFailures = 6
	// LockAfterFailures failed verifications lock an account (409
	// verification_locked; docs/SECURITY.md, "Verification limits").
	LockAfterFailures = 2
)

// InstantAuth says whether the provider's auth data proves a linked
// account's ownership at once. Errors: kluis.EUnavailable when it cannot
// tell now.
type InstantAuth interface {
	Supports(ctx context.Context, a Account) (bool, error)
}

// Options builds a Service. DB, Vault, Auditor, Keys and Accounts are
// required.
type Options struct {
	DB      *postgres.DB
	Vault   *vault.Store
	Auditor *audit.Auditor
	Keys    MACer
	// Rail carries micro-deposits; without one, micro-deposits are
	// CodeMicroDepositsUnavailable (instant verification still works).
	// With Rails set, it is the default rail: manual accounts' only.
	Rail Rail
	// Rails, if set, is the rail of each bank provider's linked accounts,
	// by provider name (the item's provider decides); a provider without
	// one offers no micro-deposits. Nil: Rail carries every account's.
	Rails map[string]Rail
	// Accounts reads and changes the bank accounts verified, and tells a
	// linked account's item's provider and status (the port bank linking
	// implements: banklink.AccountStore). Required.
	Accounts Accounts
	// Instant decides instant verification; by default a linked account of
	// an active item whose numbers the provider's auth product gave at
	// link time (accounts.account_number_ref) is proven at once.
	Instant InstantAuth
	Clock   kluis.Clock
	Logger  *slog.Logger
	// Attempts per micro-deposit verification (DefaultAttempts).
	Attempts int
	// Window is how long the user has to confirm (DefaultWindow).
	Window time.Duration
	// AnswerKind is AnswerAmounts (default) or AnswerCode.
	AnswerKind string
	// ResendAfter is how long a verification may stay pending (its send
	// failed) before the rail-poll job sends it again (1 minute).
	ResendAfter time.Duration
	// Notify, if set, is called after a transaction that enqueued events
	// commits (to wake the delivery worker).
	Notify func()
	// Lockout is how long a failed verification counts against its account
	// and its account number (DefaultLockout).
	Lockout time.Duration
	// NumberFailures is how many failed verifications of one account
	// number, across users, refuse new ones (DefaultNumberFailures).
	NumberFailures int
	// BankVerifiers check South African manual accounts with the bank
	// (bank_account_verification, bav.go); the first verifies new ones.
	BankVerifiers []BankVerifier
	// RequiredChecks must all be true for a bank verification to verify
	// (DefaultRequiredChecks).
	RequiredChecks []string
}

// Service verifies accounts. It holds no state of its own (Postgres does)
// and is safe for concurrent use.
type Service struct {
	db          *postgres.DB
	vault       *vault.Store
	audit       *audit.Auditor
	keys        MACer
	rail        Rail
	rails       map[string]Rail
	railsByName map[string]Rail
	accounts    Accounts
	instant     InstantAuth
	clock       kluis.Clock
	log         *slog.Logger
	attempts    int
	window      time.Duration
	answerKind  string
	resendAfter time.Duration
	notify      func()
	lockout     time.Duration
	numberFails int
	// Bank account verification (bav.go).
	bankVerifiers  map[string]BankVerifier
	bankVerifier   BankVerifier
	requiredChecks []string
}

// New checks opts and returns a Service.
func New(opts Options) (*Service, error) {
	if opts.DB == nil || opts.Vault == nil || opts.Auditor == nil || opts.Keys == nil || opts.Accounts == nil {
		return nil, errors.New("verification: DB, Vault, Auditor, Keys and Accounts are required")
	}
	s := &Service{db: opts.DB, vault: opts.Vault, audit: opts.Auditor, keys: opts.Keys, rail: opts.Rail,
		instant: opts.Instant, clock: opts.Clock, log: opts.Logger, attempts: opts.Attempts, window: opts.Window,
		answerKind: opts.AnswerKind, resendAfter: opts.ResendAfter, notify: opts.Notify,
		lockout: opts.Lockout, numberFails: opts.NumberFailures}
	if s.clock == nil {
		s.clock = kluis.SystemClock{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.attempts <= 0 {
		s.attempts = DefaultAttempts
	}
	if s.window <= 0 {
		s.window = DefaultWindow
	}
	switch s.answerKind {
	case "":
		s.answerKind = AnswerAmounts
	case AnswerAmounts, AnswerCode:
	default:
		return nil, errors.New("verification: AnswerKind must be amounts or code")
	}
	if s.resendAfter <= 0 {
		s.resendAfter = time.Minute
	}
	if s.lockout <= 0 {
		s.lockout = DefaultLockout
	}
	if s.numberFails <= 0 {
		s.numberFails = DefaultNumberFailures
	}
	if err := s.setBankVerifiers(opts.BankVerifiers, opts.RequiredChecks); err != nil {
		return nil, err
	}
	if err := s.setRails(opts.Rail, opts.Rails); err != nil {
		return nil, err
	}
	s.accounts = opts.Accounts
	return s, nil
}

// Sandbox returns the sandbox rail when it is among the rails (the sandbox
// routes exist only then), else nil.
func (s *Service) Sandbox() SandboxRail {
	for _, name := range sortedNames(s.railsByName) {
		if sr, ok := s.railsByName[name].(SandboxRail); ok {
			return sr
		}
	}
	return nil
}

func (s *Service) now() time.Time { return s.clock.Now().UTC() }

// Account is a bank account as verification sees it: the view type of the
// Accounts port. It is not a copy of banklink.Account (bank linking's own
// row, which verification never imports): it carries what verification
// needs and banklink's row lacks (a manual account's country, bank and
// holder's ID number; the item's provider) and leaves out what only bank
// linking uses (the provider's account id). banklink.AccountStore fills
// it from the accounts and items tables it owns.
type Account struct {
	ID                 string
	SubjectID          string
	ItemID             string
	Name               string
	Mask               string
	Type               string
	Subtype            string
	VerificationStatus string
	AccountNumberRef   string
	CreatedAt          time.Time
	// Provider is the bank provider of the account's item, once asked
	// (Accounts.ItemProvider); "" for a manual account.
	Provider string
	// Country (US or ZA) and BankID (South Africa) of a manual account;
	// empty for a linked one.
	Country, BankID string
	// HolderIDRef is the sealed holder's ID number (kind id_number) of a
	// South African manual account, when the user gave one: with
	// AccountNumberRef ({"account_number", "branch_code", "bank_id",
	// "holder_name"}) it is what a bank account verification sends.
	HolderIDRef string
	// Revoked: the user withdrew consent to the account at the provider; it
	// cannot be verified again.
	Revoked bool
	// ProviderVerificationStatus is the provider's own word on the linked
	// account's verification (Plaid's verification_status); "" for none.
	ProviderVerificationStatus string
}

// Verification is one verification as callers see it: never the answer.
type Verification struct {
	ID                string
	AccountID         string
	SubjectID         string
	RequestedMethod   string
	Method            string
	AnswerKind        string
	Status            Status
	AttemptsRemaining int
	// ProviderChecked: the bank provider sent and checks the deposits
	// (Plaid's micro-deposits); kluis holds no answer, and the user confirms
	// in the provider's Link (update mode).
	ProviderChecked bool
	// Rail names the rail that carries the verification's deposits.
	Rail      string
	RailRef   string
	ExpiresAt time.Time
	CreatedAt time.Time
	UpdatedAt time.Time
}

func notFound() error { return kluis.Errorf(kluis.ENotFound, "not found") }
