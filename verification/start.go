package verification

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/vault"
)

// instantSupported says whether instant verification proves the account's
// ownership: the configured InstantAuth (told the item's provider), or by
// default whether the item's own provider's auth product gave the
// account's numbers when the item was linked (banklink seals them as
// accounts.account_number_ref only where the provider and institution
// support auth), the provider's own verification status of them proves
// ownership (providerVerified), and the item is still active.
func (s *Service) instantSupported(ctx context.Context, a Account) (bool, error) {
	if a.ItemID == "" {
		return false, nil // manual accounts have no provider to prove anything
	}
	provider, status, err := s.accounts.ItemProvider(ctx, a.ItemID)
	if err != nil {
		return false, err
	}
	if s.instant != nil {
		a.Provider = provider
		return s.instant.Supports(ctx, a)
	}
	if a.AccountNumberRef == "" || status != "active" {
		return false, nil
	}
	return providerVerified(a.ProviderVerificationStatus), nil
}

// providerVerified is Auth's own word on the account's numbers (Plaid's
// verification_status): none means they came from the user's login
// (instant auth); automatically_verified and manually_verified mean Plaid
// verified the account by micro-deposits. Anything else (pending_*,
// unsent, expired, failed, and the database_* matches, which match a
// number, not an owner) is not proof of ownership.
func providerVerified(status string) bool {
	if status == "" {
		return true
	}
	st, ok := ProviderStatus(status)
	return ok && st == StatusVerified
}

// Start begins verifying the subject's account with method (auto, instant
// or micro_deposits). Instant verifies at once; micro-deposits are sent
// over the rail and the verification is answered sent, or posted when the
// rail posts at once. Errors: ENotFound (no such account of the subject),
// EInvalid (unknown method), CodeInstantUnsupported (instant where the
// institution cannot), EConflict (already verified, or a verification is
// in progress: the error names it), CodeLocked (micro-deposits on an
// account that failed too often; instant stays open), CodeNumberVelocity
// (micro-deposits to an account number that failed too often across
// users), EUnavailable (the rail cannot take the deposits now; the
// verification is kept and sent again by the rail-poll job).
func (s *Service) Start(ctx context.Context, actor audit.Actor, accountID, method string) (Verification, error) {
	if method != MethodAuto && method != MethodInstant && method != MethodMicroDeposits && method != MethodBankAccountVerification {
		return Verification{}, kluis.Errorf(kluis.EInvalid, "method must be auto, instant, bank_account_verification or micro_deposits")
	}
	subjectID, err := vault.LookupSubject(ctx, s.db.Pool, actor.Name)
	if err != nil {
		return Verification{}, err
	}
	// Before the rail is asked for deposits; insert checks again, locked.
	if err := vault.FenceSubject(ctx, s.db.Pool, subjectID); err != nil {
		return Verification{}, err
	}
	a, err := s.account(ctx, s.db.Pool, accountID, subjectID)
	if err != nil {
		return Verification{}, err
	}
	if a.Revoked {
		return Verification{}, kluis.Errorf(kluis.EConflict, "the account's consent was withdrawn at the bank: link it again")
	}
	if a.VerificationStatus == AccountVerified {
		return Verification{}, kluis.Errorf(kluis.EConflict, "the account is already verified")
	}
	if method == MethodBankAccountVerification {
		return s.startBankVerification(ctx, actor, a, method)
	}
	chosen := MethodMicroDeposits
	if method != MethodMicroDeposits {
		ok, err := s.instantSupported(ctx, a)
		if err != nil {
			return Verification{}, err
		}
		switch {
		case ok:
			chosen = MethodInstant
		case method == MethodInstant:
			return Verification{}, kluis.Errorf(CodeInstantUnsupported, "the account's institution cannot verify it instantly: use micro_deposits or auto")
		}
	}
	if chosen == MethodInstant {
		return s.startInstant(ctx, actor, a, method)
	}
	if target, ok := ProviderStatus(a.ProviderVerificationStatus); ok && a.ItemID != "" {
		return s.startProviderChecked(ctx, actor, a, method, target)
	}
	if method == MethodAuto && s.bankVerifiable(a) {
		// auto: instant, then the bank's word, then micro-deposits.
		return s.startBankVerification(ctx, actor, a, method)
	}
	return s.startMicroDeposits(ctx, actor, a, method)
}

func (s *Service) newVerification(a Account, requested, method string) Verification {
	now := s.now()
	v := Verification{ID: kluis.NewID(kluis.PrefixVerification), AccountID: a.ID, SubjectID: a.SubjectID,
		RequestedMethod: requested, Method: method, Status: StatusPending, AttemptsRemaining: s.attempts,
		ExpiresAt: now.Add(s.window), CreatedAt: now, UpdatedAt: now}
	if method == MethodMicroDeposits {
		v.AnswerKind = s.answerKind
	}
	return v
}

// insert writes a new pending verification with its audit entry.
func (s *Service) insert(ctx context.Context, tx pgx.Tx, actor audit.Actor, v Verification, mac []byte) error {
	if _, err := s.insertRow(ctx, tx, v, mac, nil); err != nil {
		return err
	}
	return s.auditStarted(ctx, tx, actor, v)
}

// insertRow writes a new pending verification and returns its subject's
// app; idx is the blind index of the account's number, if it has one. The
// row records both, so that the limits count a number's rows within one
// app from verification's own tables (limits.go).
func (s *Service) insertRow(ctx context.Context, tx pgx.Tx, v Verification, mac, idx []byte) (string, error) {
	if err := vault.FenceSubject(ctx, tx, v.SubjectID); err != nil {
		return "", err
	}
	app, err := vault.SubjectApp(ctx, tx, v.SubjectID)
	if err != nil {
		return "", err
	}
	var kind *string
	if v.AnswerKind != "" {
		kind = &v.AnswerKind
	}
	// ON CONFLICT on the one-open index keeps the transaction usable, so
	// that the conflict is named in it: asking on another connection while
	// this one holds the number's lock could wait for a connection that
	// only lock waiters hold.
	tag, err := tx.Exec(ctx, `
		INSERT INTO verifications (id, subject_id, account_id, requested_method, method, answer_kind, status,
			attempts_remaining, answer_mac, rail, expires_at, created_at, updated_at, number_index, provider_checked, app_id)
		VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10, $11, $11, $12, $13, $14)
		ON CONFLICT (account_id) WHERE status IN ('pending', 'sent', 'posted') DO NOTHING`,
		v.ID, v.SubjectID, v.AccountID, v.RequestedMethod, v.Method, kind, v.AttemptsRemaining, mac,
		railColumn(v.Rail), v.ExpiresAt, v.CreatedAt, idx, v.ProviderChecked, app)
	if err != nil {
		return "", dbErr("insert verification", err)
	}
	if tag.RowsAffected() == 0 {
		return "", s.inProgress(ctx, tx, v.AccountID)
	}
	return app, nil
}

// insertLimited writes a new verification of a method that can fail (the
// user guesses, or the bank refutes) within the limits on guessing: the
// limits are checked after the insert, in its transaction, under the
// number's lock (limits.go), so that nothing is sent for a refused one.
// Every such method's start goes through here; instant does not.
func (s *Service) insertLimited(ctx context.Context, tx pgx.Tx, actor audit.Actor, v Verification, mac, idx []byte) error {
	if err := lockNumber(ctx, tx, idx); err != nil {
		return err
	}
	app, err := s.insertRow(ctx, tx, v, mac, idx)
	if err != nil {
		return err
	}
	if err := s.checkLimits(ctx, tx, v, app, idx); err != nil {
		return err
	}
	return s.auditStarted(ctx, tx, actor, v)
}

// auditStarted writes the audit entry of a started verification. Its
// subject is the user who asked, or, for one a provider started, the
// account's owner.
func (s *Service) auditStarted(ctx context.Context, tx pgx.Tx, actor audit.Actor, v Verification) error {
	sub := actor.Name
	if actor.Kind != audit.ActorUser {
		var err error
		if sub, err = vault.SubjectKey(ctx, tx, v.SubjectID); err != nil {
			return err
		}
	}
	return s.audit.Append(ctx, tx, audit.Entry{
		ActorKind: actor.Kind, Actor: actor.Name, Action: "verification.started", Target: v.ID,
		Outcome: audit.OutcomeSuccess, Subject: sub, RequestID: actor.RequestID,
		Details: map[string]any{"account_id": v.AccountID, "requested_method": v.RequestedMethod, "method": v.Method},
	})
}

// inProgress is the conflict for an account that already has an open
// verification, naming it.
func (s *Service) inProgress(ctx context.Context, tx pgx.Tx, accountID string) error {
	e := kluis.Errorf(kluis.EConflict, "a verification of this account is already in progress")
	var id string
	if err := tx.QueryRow(ctx, `SELECT id FROM verifications WHERE account_id = $1 AND status IN ('pending', 'sent', 'posted')`, accountID).Scan(&id); err == nil {
		return e.With("verification_id", id)
	}
	return e
}

func (s *Service) startInstant(ctx context.Context, actor audit.Actor, a Account, requested string) (Verification, error) {
	v := s.newVerification(a, requested, MethodInstant)
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		if err := s.insert(ctx, tx, actor, v, nil); err != nil {
			return err
		}
		got, ok, err := s.applyTransition(ctx, tx, v, EventInstantProven, "", actor)
		if err != nil {
			return err
		}
		if !ok {
			return kluis.Errorf(kluis.EConflict, "the verification changed; try again")
		}
		v = got
		return nil
	})
	if err != nil {
		return Verification{}, err
	}
	s.notified()
	return v, nil
}

// deposits draws the secret: two amounts of 1 to 99 cents, or one amount
// with a code. Both come from crypto/rand.
func (s *Service) deposits() ([]int, string, error) {
	n := 2
	if s.answerKind == AnswerCode {
		n = 1
	}
	amounts := make([]int, n)
	for i := range amounts {
		r, err := rand.Int(rand.Reader, big.NewInt(99))
		if err != nil {
			return nil, "", err
		}
		amounts[i] = int(r.Int64()) + 1
	}
	if s.answerKind != AnswerCode {
		return amounts, "", nil
	}
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789" // no 0/O, 1/I
	code := make([]byte, codeLen)
	for i := range code {
		r, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			return nil, "", err
		}
		code[i] = alphabet[r.Int64()]
	}
	return amounts, string(code), nil
}

// codeLen is the length of a descriptor code.
const codeLen = 6

// answerMACFor is the keyed HMAC stored for an answer: under the
// verification system key, of a label, the verification id (so a MAC is
// worth nothing on another verification) and the normalized answer.
func (s *Service) answerMACFor(id, kind, normalized string) ([]byte, error) {
	m, err := s.keys.MAC(SystemKey, []byte("kluis/verification/answer/v1"), []byte(id), []byte(kind), []byte(normalized))
	if err != nil {
		return nil, kluis.Unavailable("key store", err)
	}
	return m, nil
}

// normalizeAmounts is the order-free form of two amounts: ascending, so
// that the user may give them in either order.
func normalizeAmounts(a []int) string {
	c := append([]int(nil), a...)
	sort.Ints(c)
	out := ""
	for i, v := range c {
		if i > 0 {
			out += ","
		}
		out += strconv.Itoa(v)
	}
	return out
}

// secretMAC is the MAC of what was drawn.
func (s *Service) secretMAC(id string, amounts []int, code string) ([]byte, error) {
	if code != "" {
		return s.answerMACFor(id, AnswerCode, code)
	}
	return s.answerMACFor(id, AnswerAmounts, normalizeAmounts(amounts))
}

// railColumn is the rail's name for the verification's row (NULL: none).
func railColumn(name string) *string {
	if name == "" {
		return nil
	}
	return &name
}

func (s *Service) startMicroDeposits(ctx context.Context, actor audit.Actor, a Account, requested string) (Verification, error) {
	rail, err := s.railFor(ctx, a)
	if err != nil {
		return Verification{}, err
	}
	if rail == nil {
		return Verification{}, kluis.Errorf(CodeMicroDepositsUnavailable, "micro-deposits are not available: no payment rail is configured for this account's bank provider")
	}
	v := s.newVerification(a, requested, MethodMicroDeposits)
	v.Rail = rail.Name()
	idx, err := s.vault.BlindIndexOf(ctx, s.db.Pool, a.AccountNumberRef)
	if err != nil {
		return Verification{}, err
	}
	amounts, code, err := s.deposits()
	if err != nil {
		return Verification{}, err
	}
	defer clear(amounts)
	mac, err := s.secretMAC(v.ID, amounts, code)
	if err != nil {
		return Verification{}, err
	}
	err = s.db.InTx(ctx, func(tx pgx.Tx) error { return s.insertLimited(ctx, tx, actor, v, mac, idx) })
	if err != nil {
		return Verification{}, err
	}
	return s.send(ctx, actor, v, a, amounts, code)
}

// send hands the deposits to the rail and moves the verification to sent
// (and on to posted if the rail posted at once). A rail that cannot take
// them leaves the verification pending: the rail-poll job draws new
// deposits and sends again.
func (s *Service) send(ctx context.Context, actor audit.Actor, v Verification, a Account, amounts []int, code string) (Verification, error) {
	rail := s.railsByName[v.Rail]
	if rail == nil {
		return Verification{}, kluis.Unavailable("payment rail", fmt.Errorf("verification: rail %q is not configured", v.Rail))
	}
	ref, err := rail.Send(ctx, Deposits{VerificationID: v.ID, AccountID: a.ID, AccountNumberRef: a.AccountNumberRef,
		AmountsCents: amounts, Code: code})
	if err != nil {
		s.log.Warn("payment rail refused deposits; the rail-poll job will send them again",
			"verification_id", v.ID, "code", kluis.ErrorCode(err))
		return Verification{}, kluis.Unavailable("payment rail", err)
	}
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		got, ok, err := s.applyTransition(ctx, tx, v, EventSent, ref, actor)
		if err == nil && ok {
			v = got
		}
		return err
	})
	if err != nil {
		return Verification{}, err
	}
	return s.refresh(ctx, actor, v)
}

// refresh asks the rail what became of sent (or posted) deposits and
// applies what it learns. A rail that cannot answer leaves v as it is.
func (s *Service) refresh(ctx context.Context, actor audit.Actor, v Verification) (Verification, error) {
	rail := s.railsByName[v.Rail]
	if (v.Status != StatusSent && v.Status != StatusPosted) || v.RailRef == "" || rail == nil {
		return v, nil
	}
	rs, err := rail.Status(ctx, v.RailRef)
	if err != nil {
		s.log.Warn("payment rail status unavailable", "verification_id", v.ID, "code", kluis.ErrorCode(err))
		return v, nil
	}
	var ev EventKind
	switch {
	case rs == RailPosted && v.Status == StatusSent:
		ev = EventPosted
	case rs == RailReturned:
		ev = EventReturned
	default:
		return v, nil
	}
	changed := false
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		v, changed, err = s.applyOrReread(ctx, tx, v, ev, "", actor)
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

// notified wakes the event worker after a commit that enqueued events.
func (s *Service) notified() {
	if s.notify != nil {
		s.notify()
	}
}

// Get returns the subject's verification; another subject's is ENotFound.
func (s *Service) Get(ctx context.Context, sub, id string) (Verification, error) {
	subjectID, err := vault.LookupSubject(ctx, s.db.Pool, sub)
	if err != nil {
		return Verification{}, err
	}
	return getVerification(ctx, s.db.Pool, id, subjectID)
}
