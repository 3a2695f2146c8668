package stitch

import (
	"context"
	"strings"
)

// BAVScope is the client-token scope bank account verification needs.
const BAVScope = "client_bankaccountverification accountholders"

// verdictFragment is the bank's verdict, as both queries read it.
const verdictFragment = `
fragment Verdict on VerifiedBankAccountDetails {
  accountVerificationResult
  detailedAccountVerificationResults { accountExists }
  accountOpen
  accountAcceptsDebits
  accountAcceptsCredits
  accountHolder { identifyingDocumentVerificationResult lastNameVerificationResult }
}`

// verifyBankAccountQuery submits a bank account verification
// (verifyBankAccountDetails, BankAccountVerificationInput). The answer is
// the bank's verdict or, when the bank answers later, a pending
// verification's id (docs/STITCH.md says how kluis reads it).
const verifyBankAccountQuery = `query VerifyBankAccount($input: BankAccountVerificationInput!) {
  verifyBankAccountDetails(input: $input) {
    __typename
    ... on VerifiedBankAccountDetails { ...Verdict }
    ... on PendingBankAccountVerification { id }
  }
}
` + verdictFragment

// bankAccountVerificationQuery asks about a pending verification.
const bankAccountVerificationQuery = `query BankAccountVerification($id: ID!) {
  bankAccountVerification(id: $id) {
    __typename
    ... on VerifiedBankAccountDetails { ...Verdict }
    ... on PendingBankAccountVerification { id }
  }
}
` + verdictFragment

// BAVInput is what a bank account verification sends: personal data and a
// secret, never logged or put in an error.
type BAVInput struct {
	AccountNumber string
	// BankID is kluis's bank id (za_…); BranchCode may be empty (Stitch
	// then uses the bank's universal branch code).
	BankID, BranchCode string
	// AccountType is kluis's (cheque, savings, transmission) or empty.
	AccountType string
	IDNumber    string
	// HolderName is split into initials and last name.
	HolderName string
}

// BAVResult is Stitch's answer: the verdict, or Pending with ID to ask
// again. Each check is true, false or nil (unknown).
type BAVResult struct {
	ID                               string
	Pending                          bool
	AccountExists, AccountOpen       *bool
	AcceptsDebits, AcceptsCredits    *bool
	IDNumberMatches, LastNameMatches *bool
}

// bavAnswer is the GraphQL answer's union.
type bavAnswer struct {
	Typename                  string `json:"__typename"`
	ID                        string `json:"id"`
	AccountVerificationResult string `json:"accountVerificationResult"`
	Detailed                  struct {
		AccountExists string `json:"accountExists"`
	} `json:"detailedAccountVerificationResults"`
	AccountOpen           *bool `json:"accountOpen"`
	AccountAcceptsDebits  *bool `json:"accountAcceptsDebits"`
	AccountAcceptsCredits *bool `json:"accountAcceptsCredits"`
	AccountHolder         struct {
		IDResult   string `json:"identifyingDocumentVerificationResult"`
		NameResult string `json:"lastNameVerificationResult"`
	} `json:"accountHolder"`
}

// VerifyBankAccountDetails submits a bank account verification with a
// client token (scope BAVScope).
func (p *Provider) VerifyBankAccountDetails(ctx context.Context, in BAVInput) (BAVResult, error) {
	initials, last := splitName(in.HolderName)
	holder := map[string]any{"individual": map[string]any{
		"identifyingDocument": map[string]any{"idNumber": map[string]any{"number": in.IDNumber}},
		"initials":            initials, "lastName": last}}
	input := map[string]any{"accountNumber": in.AccountNumber, "bankId": kluisToStitch(in.BankID), "accountHolder": holder}
	if in.BranchCode != "" {
		input["branchCode"] = in.BranchCode
	}
	if t := stitchAccountType(in.AccountType); t != "" {
		input["accountType"] = t
	}
	var data struct {
		Answer bavAnswer `json:"verifyBankAccountDetails"`
	}
	if err := p.clientGraphQL(ctx, gqlRequest{Query: verifyBankAccountQuery, OperationName: "VerifyBankAccount",
		Variables: map[string]any{"input": input}}, &data); err != nil {
		return BAVResult{}, err
	}
	return data.Answer.result(), nil
}

// BankAccountVerification asks about a pending verification.
func (p *Provider) BankAccountVerification(ctx context.Context, id string) (BAVResult, error) {
	var data struct {
		Answer bavAnswer `json:"bankAccountVerification"`
	}
	if err := p.clientGraphQL(ctx, gqlRequest{Query: bankAccountVerificationQuery, OperationName: "BankAccountVerification",
		Variables: map[string]any{"id": id}}, &data); err != nil {
		return BAVResult{}, err
	}
	r := data.Answer.result()
	if r.ID == "" {
		r.ID = id
	}
	return r, nil
}

// clientGraphQL runs op with a client token, asking for a new token once
// when Stitch no longer accepts the cached one.
func (p *Provider) clientGraphQL(ctx context.Context, op gqlRequest, out any) error {
	for attempt := 0; ; attempt++ {
		tok, err := p.clientToken(ctx, BAVScope)
		if err != nil {
			return err
		}
		err = p.graphql(ctx, tok, op, out)
		if attempt == 0 && isCode(err, "invalid_token") {
			p.forgetClientToken(BAVScope)
			continue
		}
		return err
	}
}

func (a bavAnswer) result() BAVResult {
	if a.Typename == "PendingBankAccountVerification" {
		return BAVResult{ID: safeToken(a.ID), Pending: true}
	}
	return BAVResult{AccountExists: verdict(a.Detailed.AccountExists), AccountOpen: a.AccountOpen,
		AcceptsDebits: a.AccountAcceptsDebits, AcceptsCredits: a.AccountAcceptsCredits,
		IDNumberMatches: verdict(a.AccountHolder.IDResult), LastNameMatches: verdict(a.AccountHolder.NameResult)}
}

// verdict reads a VerificationResult: verified, refuted, or unknown.
func verdict(v string) *bool {
	t, f := true, false
	switch v {
	case "verified":
		return &t
	case "refuted":
		return &f
	}
	return nil
}

// splitName turns "Lindiwe Nomsa Dube" into initials "LN" and last name "Dube".
func splitName(name string) (string, string) {
	parts := strings.Fields(name)
	if len(parts) == 0 {
		return "", ""
	}
	var initials []rune
	for _, p := range parts[:len(parts)-1] {
		initials = append(initials, []rune(p)[0])
	}
	return strings.ToUpper(string(initials)), parts[len(parts)-1]
}

// stitchAccountType is Stitch's AccountType of a kluis account type.
func stitchAccountType(t string) string {
	switch t {
	case "cheque":
		return "current"
	case "savings", "transmission":
		return t
	}
	return ""
}
