package verification

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/vault"
)

// MethodBankAccountVerification asks the bank, through a BankVerifier,
// whether a South African account's details match its records (docs/STITCH.md,
// bank account verification): no money moves, and the answer says which parts matched.
const MethodBankAccountVerification = "bank_account_verification"

// CodeBankVerificationUnavailable: bank account verification was asked for
// an account it cannot check (not a South African manual account with the
// holder's ID number or passport) or with no verifier configured (422).
const CodeBankVerificationUnavailable = "bank_account_verification_unavailable"

// The checks a bank account verification answers (Checks' JSON names).
const (
	CheckAccountExists   = "account_exists"
	CheckAccountOpen     = "account_open"
	CheckAcceptsDebits   = "accepts_debits"
	CheckAcceptsCredits  = "accepts_credits"
	CheckIDNumberMatches = "id_number_matches"
	CheckNameMatches     = "name_matches"
)

// AllChecks lists every check, in the order the contract lists them
// (api/openapi.yaml).
var AllChecks = []string{CheckAccountExists, CheckAccountOpen, CheckAcceptsDebits, CheckAcceptsCredits,
	CheckIDNumberMatches, CheckNameMatches}

// DefaultRequiredChecks are the checks that must be true for a bank
// account verification to verify the account, unless the app configures
// others (KLUIS_BAV_REQUIRED_CHECKS): the account is real and open, and its
// holder is the person whose ID number (or passport) the user gave.
var DefaultRequiredChecks = []string{CheckAccountExists, CheckAccountOpen, CheckIDNumberMatches}

// Checks is what the bank confirmed: each true, false, or nil (unknown:
// the bank could not say, or was not asked).
type Checks struct {
	AccountExists   *bool `json:"account_exists"`
	AccountOpen     *bool `json:"account_open"`
	AcceptsDebits   *bool `json:"accepts_debits"`
	AcceptsCredits  *bool `json:"accepts_credits"`
	IDNumberMatches *bool `json:"id_number_matches"`
	NameMatches     *bool `json:"name_matches"`
}

// Get returns the check called name.
func (c Checks) Get(name string) *bool {
	switch name {
	case CheckAccountExists:
		return c.AccountExists
	case CheckAccountOpen:
		return c.AccountOpen
	case CheckAcceptsDebits:
		return c.AcceptsDebits
	case CheckAcceptsCredits:
		return c.AcceptsCredits
	case CheckIDNumberMatches:
		return c.IDNumberMatches
	case CheckNameMatches:
		return c.NameMatches
	}
	return nil
}

// ParseRequiredChecks reads a comma-separated list of check names; an
// unknown or repeated name is an error naming it, an empty list the
// default.
func ParseRequiredChecks(list string) ([]string, error) {
	var out []string
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if !slices.Contains(AllChecks, n) || slices.Contains(out, n) {
			return nil, fmt.Errorf("verification: %q is not a check, or is named twice (checks: %s)", n, strings.Join(AllChecks, ", "))
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return slices.Clone(DefaultRequiredChecks), nil
	}
	return out, nil
}

// BankAnswer is a verifier's answer: final (Checks), or Pending until the
// bank answers (Ref names it for BankAccountVerification).
type BankAnswer struct {
	Ref     string
	Pending bool
	Checks  Checks
}

// BankVerifier checks bank account details against the bank's records:
// Stitch's verifyBankAccountDetails, or the sandbox's stand-in. Errors:
// kluis.EUnavailable when it cannot be reached (the verification stays
// pending and the poll job submits it again), anything else a refusal of
// kluis's request.
type BankVerifier interface {
	// Name is what the verification row records (its rail).
	Name() string
	// VerifyBankAccount submits the details.
	VerifyBankAccount(ctx context.Context, d BankDetails) (BankAnswer, error)
	// BankAccountVerification asks again about a pending one.
	BankAccountVerification(ctx context.Context, ref string) (BankAnswer, error)
}

// setBankVerifiers keeps the verifiers by name; the first verifies new
// accounts, the others finish what they started.
func (s *Service) setBankVerifiers(vs []BankVerifier, required []string) error {
	s.bankVerifiers = map[string]BankVerifier{}
	for _, v := range vs {
		if v == nil || v.Name() == "" || s.bankVerifiers[v.Name()] != nil {
			return errors.New("verification: every bank verifier needs a name of its own")
		}
		s.bankVerifiers[v.Name()] = v
		if s.bankVerifier == nil {
			s.bankVerifier = v
		}
	}
	s.requiredChecks = required
	if len(s.requiredChecks) == 0 {
		s.requiredChecks = slices.Clone(DefaultRequiredChecks)
	}
	for _, c := range s.requiredChecks {
		if !slices.Contains(AllChecks, c) {
			return fmt.Errorf("verification: unknown required check %q", c)
		}
	}
	return nil
}

// RequiredChecks lists the checks that must be true to verify an account.
func (s *Service) RequiredChecks() []string { return slices.Clone(s.requiredChecks) }

// bankVerifiable says whether a can be verified by the bank: a South
// African manual account with the holder's ID number or passport (both
// sealed under HolderIDRef), and a verifier.
func (s *Service) bankVerifiable(a Account) bool {
	return s.bankVerifier != nil && a.ItemID == "" && a.Country == CountryZA && a.AccountNumberRef != "" && a.HolderIDRef != ""
}

// outcome is the event the bank's checks make: every required check true
// verifies; a required check false refutes (a failure that counts towards
// the lock); a required check unknown leaves it unconfirmed (failed, not
// counted: the bank said nothing against the user).
func (s *Service) outcome(c Checks) EventKind {
	ev := EventBankConfirmed
	for _, name := range s.requiredChecks {
		switch v := c.Get(name); {
		case v != nil && !*v:
			return EventBankRefuted
		case v == nil:
			ev = EventBankUnconfirmed
		}
	}
	return ev
}

// startBankVerification inserts a pending bank account verification (within
// the limits on failing, like micro-deposits) and submits the details.
func (s *Service) startBankVerification(ctx context.Context, actor audit.Actor, a Account, requested string) (Verification, error) {
	if !s.bankVerifiable(a) {
		return Verification{}, kluis.Errorf(CodeBankVerificationUnavailable,
			"bank account verification needs a South African manual account with the holder's ID number or passport, and a bank verifier")
	}
	v := s.newVerification(a, requested, MethodBankAccountVerification)
	v.Rail = s.bankVerifier.Name()
	idx, err := s.vault.BlindIndexOf(ctx, s.db.Pool, a.AccountNumberRef)
	if err != nil {
		return Verification{}, err
	}
	err = s.db.InTx(ctx, func(tx pgx.Tx) error { return s.insertLimited(ctx, tx, actor, v, nil, idx) })
	if err != nil {
		return Verification{}, err
	}
	return s.submitBank(ctx, actor, v, a)
}

// submitBank sends v's details to its verifier and applies the answer. A
// verifier that cannot be reached leaves v pending without a reference:
// the poll job submits it again.
func (s *Service) submitBank(ctx context.Context, actor audit.Actor, v Verification, a Account) (Verification, error) {
	bv := s.bankVerifiers[v.Rail]
	if bv == nil {
		return Verification{}, kluis.Unavailable("bank verifier", fmt.Errorf("verification: bank verifier %q is not configured", v.Rail))
	}
	d, err := s.openBankDetails(ctx, s.db.Pool, a)
	if err != nil {
		return Verification{}, err
	}
	ans, err := bv.VerifyBankAccount(ctx, d)
	d = BankDetails{}
	if err != nil {
		s.log.Warn("bank verifier refused or unreachable; the poll job submits again", "verification_id", v.ID,
			"code", kluis.ErrorCode(err))
		if kluis.ErrorCode(err) == kluis.EUnavailable {
			return v, nil
		}
		return Verification{}, err
	}
	return s.applyBankAnswer(ctx, actor, v, ans)
}

// applyBankAnswer records a verifier's answer: pending keeps v pending with
// the verifier's reference (and the account pending); final stores the
// checks and moves v to verified or failed, in one transaction with its
// effects and audit entry.
func (s *Service) applyBankAnswer(ctx context.Context, actor audit.Actor, v Verification, ans BankAnswer) (Verification, error) {
	changed := false
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		if ans.Pending {
			got, ok, err := s.markBankPending(ctx, tx, v, ans.Ref, actor)
			if ok {
				v = got
			}
			return err
		}
		ev := s.outcome(ans.Checks)
		checks, err := json.Marshal(ans.Checks)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE verifications SET checks = $2 WHERE id = $1 AND status = 'pending'`, v.ID, checks)
		if err != nil {
			return dbErr("record bank checks", err)
		}
		if tag.RowsAffected() == 0 {
			v, err = getVerification(ctx, tx, v.ID, "")
			return err
		}
		v, changed, err = s.applyOrReread(ctx, tx, v, ev, ans.Ref, actor)
		return err
	})
	if err != nil {
		return Verification{}, err
	}
	if changed {
		s.notified()
	}
	return v, nil
}

// markBankPending records the verifier's reference of a pending bank
// verification (the bank answers later) and marks the account pending,
// audited.
func (s *Service) markBankPending(ctx context.Context, tx pgx.Tx, v Verification, ref string, actor audit.Actor) (Verification, bool, error) {
	if ref == "" || len(ref) > 256 {
		return v, false, kluis.Wrap(kluis.EUnavailable, "the bank verifier gave no reference; try again later", errors.New("verification: pending answer without a reference"))
	}
	got, err := scanVerification(tx.QueryRow(ctx, `UPDATE verifications SET rail_ref = $2, updated_at = $3
		WHERE id = $1 AND status = 'pending' AND rail_ref IS NULL RETURNING `+verificationColumns, v.ID, ref, s.now()))
	if errors.Is(err, pgx.ErrNoRows) {
		return v, false, nil
	}
	if err != nil {
		return v, false, dbErr("record bank reference", err)
	}
	if err := s.accounts.SetVerificationStatus(ctx, tx, v.AccountID, AccountPending, s.now()); err != nil {
		return v, false, err
	}
	sub := actor.Name
	if actor.Kind != audit.ActorUser {
		if sub, err = vault.SubjectKey(ctx, tx, v.SubjectID); err != nil {
			return v, false, err
		}
	}
	return got, true, s.audit.Append(ctx, tx, audit.Entry{
		ActorKind: actor.Kind, Actor: actor.Name, Action: "verification.bank_pending", Target: v.ID,
		Outcome: audit.OutcomeSuccess, Subject: sub, RequestID: actor.RequestID,
		Details: map[string]any{"account_id": v.AccountID, "verifier": v.Rail}})
}

// JobBankPoll is the job that completes pending bank verifications.
const JobBankPoll = "verification-bank-poll"

// BankPollResult counts what a bank poll did.
type BankPollResult struct {
	Completed, Submitted int
}

// PollBankVerifications asks the verifiers about every pending bank
// verification in its window and applies the answers, and submits again
// those whose first submission found the verifier unreachable.
func (s *Service) PollBankVerifications(ctx context.Context) (BankPollResult, error) {
	var res BankPollResult
	if len(s.bankVerifiers) == 0 {
		return res, nil
	}
	actor := audit.System(JobBankPoll)
	now := s.now()
	batch, err := due(ctx, s.db, `method = 'bank_account_verification' AND status = 'pending' AND expires_at > $1
		AND (rail_ref IS NOT NULL OR updated_at <= $2) ORDER BY updated_at`, sweepBatch, now, now.Add(-s.resendAfter))
	if err != nil {
		return res, err
	}
	for _, v := range batch {
		if ctx.Err() != nil {
			break
		}
		got, err := s.pollBank(ctx, actor, v)
		if err != nil {
			s.log.Warn("bank verification poll failed; the next run asks again", "verification_id", v.ID, "code", kluis.ErrorCode(err))
			continue
		}
		switch {
		case got.Status != StatusPending:
			res.Completed++
		case v.RailRef == "" && got.RailRef != "":
			res.Submitted++
		}
	}
	return res, ctx.Err()
}

// pollBank asks v's verifier about it (or submits it again when it has no
// reference yet) and applies the answer.
func (s *Service) pollBank(ctx context.Context, actor audit.Actor, v Verification) (Verification, error) {
	bv := s.bankVerifiers[v.Rail]
	if bv == nil {
		return v, kluis.Unavailable("bank verifier", fmt.Errorf("verification: bank verifier %q is not configured", v.Rail))
	}
	if v.RailRef == "" {
		a, err := s.account(ctx, s.db.Pool, v.AccountID, v.SubjectID)
		if err != nil {
			return v, err
		}
		return s.submitBank(ctx, actor, v, a)
	}
	ans, err := bv.BankAccountVerification(ctx, v.RailRef)
	if err != nil {
		return v, err
	}
	if ans.Pending {
		return v, nil
	}
	ans.Ref = ""
	return s.applyBankAnswer(ctx, actor, v, ans)
}

// CompleteBankVerification acts on a verifier's webhook saying the bank
// answered the verification it knows as ref: the verifier is asked (the
// webhook's body is not believed beyond naming it) and its answer applied.
// An unknown ref, or one already completed, does nothing.
func (s *Service) CompleteBankVerification(ctx context.Context, verifier, ref string) error {
	if s.bankVerifiers[verifier] == nil || ref == "" {
		return nil
	}
	v, err := scanVerification(s.db.Pool.QueryRow(ctx, `SELECT `+verificationColumns+` FROM verifications
		WHERE method = 'bank_account_verification' AND status = 'pending' AND rail = $1 AND rail_ref = $2`, verifier, ref))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return dbErr("read verification", err)
	}
	_, err = s.pollBank(ctx, audit.System("bank-verification-webhook"), v)
	return err
}

// BankChecks returns the checks a bank verification recorded (nil: none
// yet, or another method).
func (s *Service) BankChecks(ctx context.Context, verificationID string) (*Checks, error) {
	var raw []byte
	err := s.db.Pool.QueryRow(ctx, `SELECT checks FROM verifications WHERE id = $1`, verificationID).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) || raw == nil {
		return nil, nil
	}
	if err != nil {
		return nil, dbErr("read checks", err)
	}
	var c Checks
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, kluis.Wrap(kluis.EInternal, "internal error", errors.New("verification: stored checks are malformed"))
	}
	return &c, nil
}
