package stitchtest

import (
	"encoding/json"
	"net/http"
	"sync"
)

// Bank account verification test accounts: the answer depends on the
// account number's last four digits, as the sandbox's does
// (verification/sandboxbav), so one test table drives both:
//
//	0001 all verified · 0002 no such account · 0003 closed · 0004 ID
//	number (or passport) refuted · 0005 family name refuted · 0006 pending, then verified ·
//	0007 pending, then ID refuted · 0008 every result unknown
const (
	BAVVerified          = "0001"
	BAVNoAccount         = "0002"
	BAVClosed            = "0003"
	BAVIDMismatch        = "0004"
	BAVNameMismatch      = "0005"
	BAVPendingVerified   = "0006"
	BAVPendingIDMismatch = "0007"
	BAVUnknown           = "0008"
)

// bavState holds the verifications the server answered pending.
type bavState struct {
	mu      sync.Mutex
	pending map[string]string // id → the suffix whose verdict the bank gives
	done    map[string]bool   // ids the bank has answered
	docs    []BAVDocument     // the documents verifications named, in order
}

// BAVDocument is what a verification request identified its holder by:
// Kind "identityDocument" or "passport", and the document's country. The
// number is not kept.
type BAVDocument struct {
	Kind, Country string
}

// BAVDocuments lists the holder documents of the verifications the server
// took, in order.
func (s *Server) BAVDocuments() []BAVDocument {
	s.bav.mu.Lock()
	defer s.bav.mu.Unlock()
	return append([]BAVDocument(nil), s.bav.docs...)
}

func (b *bavState) init() {
	b.pending = map[string]string{}
	b.done = map[string]bool{}
}

// bavInput is the part of BankAccountVerificationInput the server checks,
// as Stitch's API reference gives it: accountHolder
// (AccountHolderBankAccountVerificationInput) with an individual
// (IndividualBankAccountVerificationInput: familyName, initials,
// identifyingDocument), whose IdentifyingDocumentInput takes exactly one
// of identityDocument and passport, each {country, number}.
type bavInput struct {
	AccountNumber string `json:"accountNumber"`
	BankID        string `json:"bankId"`
	AccountHolder struct {
		Individual *struct {
			IdentifyingDocument struct {
				IdentityDocument     *docInput `json:"identityDocument"`
				Passport             *docInput `json:"passport"`
				TemporaryResidenceID *docInput `json:"temporaryResidenceId"`
			} `json:"identifyingDocument"`
			FamilyName string `json:"familyName"`
			Initials   string `json:"initials"`
		} `json:"individual"`
	} `json:"accountHolder"`
}

// docInput is IdentityDocumentInput and PassportInput.
type docInput struct {
	Country string `json:"country"`
	Number  string `json:"number"`
}

// document checks the holder's identifying document: exactly one, an
// identity document a South African ID number (13 digits, country ZA), a
// passport a number and a two-capital country code.
func (in bavInput) document() (BAVDocument, bool) {
	ind := in.AccountHolder.Individual
	if ind == nil {
		return BAVDocument{}, false
	}
	d := ind.IdentifyingDocument
	switch {
	case d.IdentityDocument != nil && d.Passport == nil && d.TemporaryResidenceID == nil:
		ok := d.IdentityDocument.Country == "ZA" && len(d.IdentityDocument.Number) == 13 && allDigits(d.IdentityDocument.Number)
		return BAVDocument{Kind: "identityDocument", Country: "ZA"}, ok
	case d.Passport != nil && d.IdentityDocument == nil && d.TemporaryResidenceID == nil:
		c := d.Passport.Country
		ok := len(c) == 2 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z' && d.Passport.Number != ""
		return BAVDocument{Kind: "passport", Country: c}, ok
	}
	return BAVDocument{}, false
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func (s *Server) verifyBankAccount(w http.ResponseWriter, bearer string, vars map[string]any) {
	if !s.clientTokenLive(bearer) {
		gqlErr(w, http.StatusOK, "UNAUTHENTICATED")
		return
	}
	raw, _ := json.Marshal(vars["input"])
	var in bavInput
	if json.Unmarshal(raw, &in) != nil || len(in.AccountNumber) < 4 || in.BankID == "" {
		gqlErr(w, http.StatusOK, "BAD_USER_INPUT")
		return
	}
	doc, ok := in.document()
	if !ok {
		gqlErr(w, http.StatusOK, "BAD_USER_INPUT")
		return
	}
	s.bav.mu.Lock()
	s.bav.docs = append(s.bav.docs, doc)
	s.bav.mu.Unlock()
	suffix := in.AccountNumber[len(in.AccountNumber)-4:]
	var ans map[string]any
	switch suffix {
	case BAVPendingVerified, BAVPendingIDMismatch:
		id := "bav_" + random(16)
		s.bav.mu.Lock()
		s.bav.pending[id] = map[string]string{BAVPendingVerified: BAVVerified, BAVPendingIDMismatch: BAVIDMismatch}[suffix]
		s.bav.mu.Unlock()
		ans = map[string]any{"__typename": "PendingBankAccountVerification", "id": id}
	default:
		ans = verdictFor(suffix)
	}
	writeJSON(w, map[string]any{"data": map[string]any{"verifyBankAccountDetails": ans}})
}

func (s *Server) bankAccountVerification(w http.ResponseWriter, bearer string, vars map[string]any) {
	if !s.clientTokenLive(bearer) {
		gqlErr(w, http.StatusOK, "UNAUTHENTICATED")
		return
	}
	id, _ := vars["id"].(string)
	s.bav.mu.Lock()
	suffix, ok := s.bav.pending[id]
	done := s.bav.done[id]
	s.bav.mu.Unlock()
	var ans map[string]any
	switch {
	case !ok:
		gqlErr(w, http.StatusOK, "NOT_FOUND")
		return
	case done:
		ans = verdictFor(suffix)
	default:
		ans = map[string]any{"__typename": "PendingBankAccountVerification", "id": id}
	}
	writeJSON(w, map[string]any{"data": map[string]any{"bankAccountVerification": ans}})
}

// BankAnswers plays the bank answering every pending verification, and
// returns the webhooks Stitch then sends, one per verification.
func (s *Server) BankAnswers() []Webhook {
	s.bav.mu.Lock()
	var ids []string
	for id := range s.bav.pending {
		if !s.bav.done[id] {
			s.bav.done[id] = true
			ids = append(ids, id)
		}
	}
	s.bav.mu.Unlock()
	var out []Webhook
	for _, id := range ids {
		body, _ := json.Marshal(map[string]any{"type": "bank_account_verification.completed", "data": map[string]string{"id": id}})
		out = append(out, s.SignWebhook(body))
	}
	return out
}

// verdictFor is the bank's verdict for an account number ending in suffix.
func verdictFor(suffix string) map[string]any {
	result := func(v string) any {
		if v == "" {
			return nil
		}
		return v
	}
	exists, open, debits, credits, id, name := "verified", any(true), any(true), any(true), "verified", "verified"
	switch suffix {
	case BAVNoAccount:
		exists, open, debits, credits, id, name = "refuted", nil, nil, nil, "", ""
	case BAVClosed:
		open, debits, credits = false, false, false
	case BAVIDMismatch:
		id = "refuted"
	case BAVNameMismatch:
		name = "refuted"
	case BAVUnknown:
		exists, open, debits, credits, id, name = "unknown", nil, nil, nil, "unknown", "unknown"
	}
	agg := "verified"
	if exists != "verified" || id != "verified" || name != "verified" {
		agg = "refuted"
	}
	return map[string]any{"__typename": "VerifiedBankAccountDetails", "accountVerificationResult": agg,
		"detailedAccountVerificationResults": map[string]any{"accountExists": result(exists)},
		"accountOpen":                        open, "accountAcceptsDebits": debits, "accountAcceptsCredits": credits,
		"accountHolder": map[string]any{"__typename": "VerifiedIndividualBankAccountDetails",
			"identifyingDocumentVerificationResult": result(id), "familyNameVerificationResult": result(name)}}
}
