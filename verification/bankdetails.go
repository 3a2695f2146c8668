package verification

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink/accountnumber"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
)

// BankDetails is what a bank account verification (BAV) sends to the bank
// about a South African manual account: the account's address (bank,
// branch, number, type) and the holder's name and ID number as the user gave
// them. It is opened from the vault for one call and never stored; printing
// it shows none of the secrets. The holder is identified by IDNumber or,
// for a holder without one, by PassportNumber and PassportCountry.
type BankDetails struct {
	BankID, BranchCode, AccountNumber, AccountType string
	HolderName, IDNumber                           string
	PassportNumber, PassportCountry                string
}

// String keeps the numbers and the name out of %v.
func (b BankDetails) String() string {
	return "BankDetails{BankID:" + b.BankID + " AccountType:" + b.AccountType + " [numbers and name redacted]}"
}

// GoString makes %#v as safe as %v.
func (b BankDetails) GoString() string { return b.String() }

// openBankDetails opens the sealed details of a South African manual
// account a (read through the Accounts port) in q, the seam a BAV method calls. An
// account of another country is EInvalid; a sealed record whose bank is not
// the account's (a pointer that disagrees with what it points at) is an
// internal error; the vault's errors (ENotFound once erased,
// CodeCredentialRevoked, EUnavailable) pass through.
func (s *Service) openBankDetails(ctx context.Context, q postgres.Querier, a Account) (BankDetails, error) {
	if a.Country != CountryZA || a.AccountNumberRef == "" {
		return BankDetails{}, kluis.Errorf(kluis.EInvalid, "bank account verification needs a South African manual account")
	}
	var n sealedZANumbers
	if err := s.openJSON(ctx, q, vault.AccountOwner(a.ID), a.AccountNumberRef, accountnumber.Kind, &n); err != nil {
		return BankDetails{}, err
	}
	if n.BankID != a.BankID || n.AccountNumber == "" || n.BranchCode == "" {
		return BankDetails{}, kluis.Wrap(kluis.EInternal, "internal error",
			fmt.Errorf("verification: account %s: its sealed bank is not its own", a.ID))
	}
	d := BankDetails{BankID: n.BankID, BranchCode: n.BranchCode, AccountNumber: n.AccountNumber,
		AccountType: a.Subtype, HolderName: n.HolderName}
	if a.HolderIDRef != "" {
		var id sealedIDNumber
		if err := s.openJSON(ctx, q, vault.AccountOwner(a.ID), a.HolderIDRef, KindIDNumber, &id); err != nil {
			return BankDetails{}, err
		}
		d.IDNumber, d.PassportNumber, d.PassportCountry = id.IDNumber, id.PassportNumber, id.PassportCountry
	}
	return d, nil
}

// openJSON opens the credential ref that owner's pointer names, checks it
// is owner's own (vault.OpenOwnedIn: a pointer made to name another
// account's numbers or ID number is EIntegrity, nothing opened reaches a
// bank) and of kind, decodes its secret into v and zeroes the plaintext.
func (s *Service) openJSON(ctx context.Context, q postgres.Querier, owner vault.Owner, ref, kind string, v any) error {
	cred, err := s.vault.OpenOwnedIn(ctx, q, owner, ref)
	if err != nil {
		return err
	}
	defer cred.Zero()
	if cred.Kind != kind {
		return kluis.Wrap(kluis.EInternal, "internal error", fmt.Errorf("verification: credential %s is a %s, not a %s", ref, cred.Kind, kind))
	}
	if err := json.Unmarshal(cred.Secret, v); err != nil {
		return kluis.Errorf(kluis.EInternal, "internal error")
	}
	return nil
}
