package verification

import (
	"context"
	"crypto/hmac"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/vault"
)

// Answer is what the user read off their statement: the two amounts (in
// either order), or the code. It is a secret: printing it shows nothing.
type Answer struct {
	Amounts []int
	Code    string
}

// String keeps the answer out of %v.
func (Answer) String() string { return "Answer{[redacted]}" }

// GoString makes %#v as safe as %v.
func (a Answer) GoString() string { return a.String() }

// maxCodeLen bounds a code answer.
const maxCodeLen = 16

// normalize checks the answer's shape against the kind the verification
// expects and returns its normalized form. A malformed answer is EInvalid
// and spends no attempt: it cannot be right, and it is not a guess.
func (a Answer) normalize(kind string) (string, error) {
	switch {
	case a.Amounts != nil && a.Code != "":
		return "", kluis.Errorf(kluis.EInvalid, "give amounts or code, not both")
	case kind == AnswerAmounts:
		if len(a.Amounts) != 2 {
			return "", kluis.Errorf(kluis.EInvalid, "amounts must be the two deposits, in cents")
		}
		for _, v := range a.Amounts {
			if v < 1 || v > 99 {
				return "", kluis.Errorf(kluis.EInvalid, "each amount is between 1 and 99 cents")
			}
		}
		return normalizeAmounts(a.Amounts), nil
	case kind == AnswerCode:
		code := strings.ToUpper(strings.TrimSpace(a.Code))
		if code == "" || len(code) > maxCodeLen {
			return "", kluis.Errorf(kluis.EInvalid, "code must be the code of the deposit's description")
		}
		for i := 0; i < len(code); i++ {
			if c := code[i]; !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
				return "", kluis.Errorf(kluis.EInvalid, "code must be letters and digits")
			}
		}
		return code, nil
	}
	return "", kluis.Errorf(kluis.EInvalid, "this verification takes no answer")
}

// mismatch is the 422 for a wrong answer.
func mismatch(left int) error {
	msg := "the answer does not match"
	if left == 0 {
		msg = "the answer does not match; no attempts are left and the verification failed"
	}
	return kluis.Errorf(CodeMismatch, "%s", msg).With("attempts_remaining", left)
}

// Confirm checks the user's answer. Right: the verification and the account
// become verified (one transition, whatever the concurrency). Wrong: one
// attempt is spent (never below zero; the last one fails the verification)
// and the error is CodeMismatch with attempts_remaining. Errors: ENotFound,
// EInvalid (a malformed answer; no attempt spent), EConflict (not posted
// yet, or failed, expired, returned or verified already).
func (s *Service) Confirm(ctx context.Context, actor audit.Actor, id string, ans Answer) (Verification, error) {
	subjectID, err := vault.LookupSubject(ctx, s.db.Pool, actor.Name)
	if err != nil {
		return Verification{}, err
	}
	v, err := getVerification(ctx, s.db.Pool, id, subjectID)
	if err != nil {
		return Verification{}, err
	}
	if err := vault.FenceSubject(ctx, s.db.Pool, subjectID); err != nil {
		return Verification{}, err
	}
	if v.Method != MethodMicroDeposits {
		return Verification{}, conflict(v.Status)
	}
	if v.ProviderChecked {
		return Verification{}, kluis.Errorf(kluis.EConflict,
			"the bank provider checks these deposits: the user confirms them in the provider's Link, in update mode (POST /v1/link/sessions with the account's item_id)").
			With("status", string(v.Status))
	}
	normalized, err := ans.normalize(v.AnswerKind)
	if err != nil {
		return Verification{}, err
	}
	if v.Status == StatusSent {
		if v, err = s.refresh(ctx, actor, v); err != nil {
			return Verification{}, err
		}
	}
	if v.Status.Open() && !s.now().Before(v.ExpiresAt) {
		if v, err = s.expire(ctx, actor, v); err != nil {
			return Verification{}, err
		}
	}
	if v.Status != StatusPosted {
		return Verification{}, conflict(v.Status)
	}
	stored, err := answerMAC(ctx, s.db.Pool, v.ID)
	if err != nil {
		return Verification{}, err
	}
	given, err := s.answerMACFor(v.ID, v.AnswerKind, normalized)
	if err != nil {
		return Verification{}, err
	}
	right := len(stored) > 0 && hmac.Equal(stored, given)
	var ok bool
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		if err := vault.FenceSubject(ctx, tx, subjectID); err != nil {
			return err
		}
		var got Verification
		var err error
		if right {
			got, ok, err = s.applyTransition(ctx, tx, v, EventRightAnswer, "", actor)
		} else {
			got, ok, err = s.spendAttempt(ctx, tx, v, actor)
		}
		if err != nil {
			return err
		}
		if !ok {
			// Another request changed it first: answer from where it
			// stands now.
			got, err = getVerification(ctx, tx, v.ID, "")
		}
		v = got
		return err
	})
	if err != nil {
		return Verification{}, err
	}
	if !ok {
		return Verification{}, conflict(v.Status)
	}
	if right || v.Status == StatusFailed {
		s.notified()
	}
	if !right {
		return Verification{}, mismatch(v.AttemptsRemaining)
	}
	return v, nil
}

// expire moves an open verification past its window to expired.
func (s *Service) expire(ctx context.Context, actor audit.Actor, v Verification) (Verification, error) {
	changed := false
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		v, changed, err = s.applyOrReread(ctx, tx, v, EventDeadline, "", actor)
		return err
	})
	if err == nil && changed {
		s.notified()
	}
	return v, err
}
