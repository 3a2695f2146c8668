// Package sandboxbav is the sandbox's bank account verification: a
// verification.BankVerifier that plays the bank without one. Its answer
// depends only on the account number's last four digits, so that an app
// (and `kluis dev`) reaches every outcome on purpose; it keeps nothing, so
// every instance answers alike:
//
//	ends in | the bank says
//	0001    | all six checks true (verified)
//	0002    | no such account (account_exists false; the rest unknown)
//	0003    | the account is closed (account_open false)
//	0004    | the ID number is not the holder's (id_number_matches false)
//	0005    | the name is not the holder's (name_matches false; verified
//	        | unless name_matches is required)
//	0006    | pending: the bank answers later, all true, at the first poll
//	0007    | pending, then the ID number does not match
//	0008    | the bank cannot say (every check unknown: failed, not counted)
//	other   | all six checks true
//
// The test ID number is any valid one (za.ParseIDNumber), or in its place
// any valid passport (za.ParsePassport; id_number_matches is then the
// bank's verdict on the passport); names are not compared except for 0005.
package sandboxbav

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/verification"
)

// Name is the verifier's name on the verifications it starts.
const Name = "sandbox"

// The test account numbers' endings.
const (
	SuffixVerified          = "0001"
	SuffixNoAccount         = "0002"
	SuffixClosed            = "0003"
	SuffixIDMismatch        = "0004"
	SuffixNameMismatch      = "0005"
	SuffixPendingVerified   = "0006"
	SuffixPendingIDMismatch = "0007"
	SuffixUnknown           = "0008"
)

// Verifier is the sandbox's bank account verification.
type Verifier struct{}

// New returns the sandbox verifier.
func New() *Verifier { return &Verifier{} }

// Name is "sandbox".
func (*Verifier) Name() string { return Name }

// VerifyBankAccount answers by the account number's ending.
func (*Verifier) VerifyBankAccount(_ context.Context, d verification.BankDetails) (verification.BankAnswer, error) {
	n := d.AccountNumber
	passport := d.PassportNumber != "" && d.PassportCountry != ""
	if len(n) < 4 || (d.IDNumber != "") == passport {
		return verification.BankAnswer{}, kluis.Errorf(kluis.EInvalid, "sandbox bank verification: an account number and an ID number or a passport are required")
	}
	suffix := n[len(n)-4:]
	switch suffix {
	case SuffixPendingVerified, SuffixPendingIDMismatch:
		var b [8]byte
		_, _ = rand.Read(b[:])
		return verification.BankAnswer{Pending: true, Ref: "sbx_bav_" + suffix + "_" + hex.EncodeToString(b[:])}, nil
	}
	return verification.BankAnswer{Checks: ChecksFor(suffix)}, nil
}

// BankAccountVerification answers a pending one: the bank has answered.
func (*Verifier) BankAccountVerification(_ context.Context, ref string) (verification.BankAnswer, error) {
	rest, ok := strings.CutPrefix(ref, "sbx_bav_")
	if !ok || len(rest) < 5 {
		return verification.BankAnswer{}, kluis.Wrap(kluis.ENotFound, "not found", errors.New("sandboxbav: unknown reference"))
	}
	suffix := SuffixVerified
	if rest[:4] == SuffixPendingIDMismatch {
		suffix = SuffixIDMismatch
	}
	return verification.BankAnswer{Ref: ref, Checks: ChecksFor(suffix)}, nil
}

// ChecksFor is what the sandbox bank says for an account number ending in
// suffix.
func ChecksFor(suffix string) verification.Checks {
	t, f := true, false
	all := verification.Checks{AccountExists: &t, AccountOpen: &t, AcceptsDebits: &t, AcceptsCredits: &t,
		IDNumberMatches: &t, NameMatches: &t}
	switch suffix {
	case SuffixNoAccount:
		return verification.Checks{AccountExists: &f}
	case SuffixClosed:
		all.AccountOpen, all.AcceptsDebits, all.AcceptsCredits = &f, &f, &f
	case SuffixIDMismatch:
		all.IDNumberMatches = &f
	case SuffixNameMismatch:
		all.NameMatches = &f
	case SuffixUnknown:
		return verification.Checks{}
	}
	return all
}

var _ verification.BankVerifier = (*Verifier)(nil)
