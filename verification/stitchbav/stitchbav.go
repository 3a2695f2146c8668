// Package stitchbav puts Stitch's bank account verification
// (verifyBankAccountDetails, banklink/stitch) behind verification's
// BankVerifier: a South African manual account's number, bank and branch,
// its holder's ID number (or passport and its country) and name, checked
// against the bank's records.
package stitchbav

import (
	"context"

	"github.com/kluis-dev/kluis/banklink/stitch"
	"github.com/kluis-dev/kluis/verification"
)

// Verifier is Stitch's bank account verification.
type Verifier struct{ p *stitch.Provider }

// New wraps the Stitch adapter.
func New(p *stitch.Provider) *Verifier { return &Verifier{p: p} }

// Name is "stitch": the verifications it starts record it, and its
// webhooks arrive at /webhooks/stitch.
func (v *Verifier) Name() string { return stitch.Name }

// VerifyBankAccount submits the details to Stitch.
func (v *Verifier) VerifyBankAccount(ctx context.Context, d verification.BankDetails) (verification.BankAnswer, error) {
	r, err := v.p.VerifyBankAccountDetails(ctx, stitch.BAVInput{AccountNumber: d.AccountNumber, BankID: d.BankID,
		BranchCode: d.BranchCode, AccountType: d.AccountType, IDNumber: d.IDNumber, PassportNumber: d.PassportNumber,
		PassportCountry: d.PassportCountry, HolderName: d.HolderName})
	if err != nil {
		return verification.BankAnswer{}, err
	}
	return answer(r), nil
}

// BankAccountVerification asks Stitch about a pending verification.
func (v *Verifier) BankAccountVerification(ctx context.Context, ref string) (verification.BankAnswer, error) {
	r, err := v.p.BankAccountVerification(ctx, ref)
	if err != nil {
		return verification.BankAnswer{}, err
	}
	return answer(r), nil
}

// answer maps Stitch's verdict to kluis's checks: the family name is what
// Stitch compares of the holder's name, and id_number_matches is its
// verdict on whichever document was sent (ID number or passport).
func answer(r stitch.BAVResult) verification.BankAnswer {
	return verification.BankAnswer{Ref: r.ID, Pending: r.Pending, Checks: verification.Checks{
		AccountExists: r.AccountExists, AccountOpen: r.AccountOpen, AcceptsDebits: r.AcceptsDebits,
		AcceptsCredits: r.AcceptsCredits, IDNumberMatches: r.IDNumberMatches, NameMatches: r.LastNameMatches}}
}

var _ verification.BankVerifier = (*Verifier)(nil)
