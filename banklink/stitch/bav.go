package stitch

import (
	"context"
	"strings"

	"github.com/kluis-dev/kluis"
)

// BAVScope is the client-token scope bank account verification needs.
const BAVScope = "client_bankaccountverification accountholders"

// verdictFragment is the bank's verdict, as both queries read it
// (VerifiedBankAccountDetails; its accountHolder is the union
// VerifiedAccountHolderBankAccountDetails, of which kluis asks only for
// individuals).
const verdictFragment = `
fragment Verdict on VerifiedBankAccountDetails {
  accountVerificationResult
  detailedAccountVerificationResults { accountExists }
  accountOpen
  accountAcceptsDebits
  accountAcceptsCredits
  accountHolder {
    __typename
    ... on VerifiedIndividualBankAccountDetails { identifyingDocumentVerificationResult familyNameVerificationResult }
  }
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
	// IDNumber is the holder's South African ID number; a holder without
	// one gives PassportNumber and PassportCountry (ISO 3166-1 alpha-2)
	// instead. Exactly one of the two is sent.
	IDNumber                        string
	PassportNumber, PassportCountry string
	// HolderName is split into initials and family name.
	HolderName string
}

// String keeps the numbers and the name out of %v.
func (in BAVInput) String() string { return "BAVInput{[redacted]}" }

// GoString makes %#v as safe as %v.
func (in BAVInput) GoString() string { return in.String() }

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
		Typename   string `json:"__typename"`
		IDResult   string `json:"identifyingDocumentVerificationResult"`
		NameResult string `json:"familyNameVerificationResult"`
	} `json:"accountHolder"`
}

// VerifyBankAccountDetails submits a bank account verification with a
// client token (scope BAVScope). The holder is an individual
// (IndividualBankAccountVerificationInput) identified by one document
// (IdentifyingDocumentInput takes exactly one): their South African
// identity document, or their passport with its issuing country. Input
// without exactly one of them is EInvalid, and nothing is sent.
func (p *Provider) VerifyBankAccountDetails(ctx context.Context, in BAVInput) (BAVResult, error) {
	doc, err := identifyingDocument(in)
	if err != nil {
		return BAVResult{}, err
	}
	initials, family := splitName(in.HolderName)
	individual := map[string]any{"identifyingDocument": doc}
	if initials != "" {
		individual["initials"] = initials
	}
	if family != "" {
		individual["familyName"] = family
	}
	holder := map[string]any{"individual": individual}
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

// identifyingDocument is the IdentifyingDocumentInput of in: an
// IdentityDocumentInput (country ZA) for an ID number, a PassportInput for
// a passport.
func identifyingDocument(in BAVInput) (map[string]any, error) {
	switch {
	case in.IDNumber != "" && in.PassportNumber == "" && in.PassportCountry == "":
		return map[string]any{"identityDocument": map[string]any{"country": "ZA", "number": in.IDNumber}}, nil
	case in.IDNumber == "" && in.PassportNumber != "" && in.PassportCountry != "":
		return map[string]any{"passport": map[string]any{"country": in.PassportCountry, "number": in.PassportNumber}}, nil
	}
	return nil, providerError(kluis.EInvalid, "stitch bank account verification: the holder needs an ID number or a passport with its country, not both", nil)
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
	r := BAVResult{AccountExists: verdict(a.Detailed.AccountExists), AccountOpen: a.AccountOpen,
		AcceptsDebits: a.AccountAcceptsDebits, AcceptsCredits: a.AccountAcceptsCredits}
	if a.AccountHolder.Typename == "VerifiedIndividualBankAccountDetails" {
		r.IDNumberMatches, r.LastNameMatches = verdict(a.AccountHolder.IDResult), verdict(a.AccountHolder.NameResult)
	}
	return r
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

// splitName turns "Lindiwe Nomsa Dube" into initials "LN" and family name
// "Dube" (Stitch's familyName: the last word; its initials: the first
// letters of the given names).
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
