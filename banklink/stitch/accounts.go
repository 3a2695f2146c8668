package stitch

import (
	"context"
	"strings"

	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/za"
)

// bankAccountsQuery reads the user's accounts with their numbers and
// holders (scopes accounts and accountholders).
const bankAccountsQuery = `query ListBankAccounts {
  user {
    bankAccounts {
      id
      name
      accountNumber
      accountType
      bankId
      branchCode
      accountHolder {
        __typename
        ... on Individual { fullName }
        ... on Business { name }
      }
    }
  }
}`

// bankAccount is one account as the GraphQL API answers it.
type bankAccount struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	AccountNumber string `json:"accountNumber"`
	AccountType   string `json:"accountType"`
	BankID        string `json:"bankId"`
	BranchCode    string `json:"branchCode"`
}

// accounts runs the accounts query with the bundle's user token.
func (p *Provider) accounts(ctx context.Context, token string) (bundle, []bankAccount, error) {
	b, err := decodeBundle(token)
	if err != nil {
		return bundle{}, nil, providerError(banklink.CodeInvalidToken, "stitch accounts: not a Stitch credential", nil)
	}
	var data struct {
		User struct {
			BankAccounts []bankAccount `json:"bankAccounts"`
		} `json:"user"`
	}
	if err := p.graphql(ctx, b.Access, gqlRequest{Query: bankAccountsQuery, OperationName: "ListBankAccounts"}, &data); err != nil {
		return bundle{}, nil, err
	}
	return b, data.User.BankAccounts, nil
}

// GetAccounts returns the item's bank and accounts, masked.
func (p *Provider) GetAccounts(ctx context.Context, token string) (banklink.ItemAccounts, error) {
	b, accts, err := p.accounts(ctx, token)
	if err != nil {
		return banklink.ItemAccounts{}, err
	}
	out := banklink.ItemAccounts{ProviderItemID: b.User}
	for _, a := range accts {
		if out.Institution.ID == "" {
			out.Institution = institutionOf(a.BankID)
		}
		typ := "depository"
		if a.AccountType == "creditCard" {
			typ = "credit"
		}
		out.Accounts = append(out.Accounts, banklink.ProviderAccount{ProviderAccountID: a.ID, Name: a.Name,
			Mask: maskOf(a.AccountNumber), Type: typ, Subtype: a.AccountType})
	}
	if out.Institution.ID == "" {
		return banklink.ItemAccounts{}, providerError(banklink.CodeNoAccounts, "stitch accounts: the user shared no account", nil)
	}
	return out, nil
}

// GetAuth returns the full numbers of the accounts Stitch gives them for
// (cards come masked and are left out), with their branch code and bank;
// none at all is CodeProductNotSupported.
func (p *Provider) GetAuth(ctx context.Context, token string) ([]banklink.AuthNumbers, error) {
	_, accts, err := p.accounts(ctx, token)
	if err != nil {
		return nil, err
	}
	var out []banklink.AuthNumbers
	for _, a := range accts {
		if !allDigits(a.AccountNumber) {
			continue
		}
		inst := institutionOf(a.BankID)
		branch := a.BranchCode
		if bank, ok := za.BankByID(inst.ID); ok && branch == "" {
			branch = bank.UniversalBranchCode
		}
		out = append(out, banklink.AuthNumbers{ProviderAccountID: a.ID, AccountNumber: a.AccountNumber,
			BranchCode: branch, BankID: inst.ID})
	}
	if len(out) == 0 {
		return nil, providerError(banklink.CodeProductNotSupported, "stitch auth: no account of this user has a full number", nil)
	}
	return out, nil
}

// stitchBanks maps Stitch's BankId values to kluis's South African bank ids
// (package za) where they differ from "za_" + the Stitch id.
var stitchBanks = map[string]string{"discovery_bank": "za_discovery"}

// institutionOf names a Stitch bank as kluis does.
func institutionOf(stitchID string) banklink.Institution {
	id := stitchBanks[stitchID]
	if id == "" {
		id = "za_" + safeToken(stitchID)
	}
	if bank, ok := za.BankByID(id); ok {
		return banklink.Institution{ID: bank.ID, Name: bank.Name}
	}
	return banklink.Institution{ID: id, Name: safeToken(stitchID)}
}

// kluisToStitch is the Stitch BankId of a kluis bank id.
func kluisToStitch(id string) string {
	for s, k := range stitchBanks {
		if k == id {
			return s
		}
	}
	return strings.TrimPrefix(id, "za_")
}

// maskOf is the last four digits of a number (masked numbers included).
func maskOf(n string) string {
	var d []byte
	for i := 0; i < len(n); i++ {
		if n[i] >= '0' && n[i] <= '9' {
			d = append(d, n[i])
		}
	}
	if len(d) > 4 {
		d = d[len(d)-4:]
	}
	return string(d)
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
