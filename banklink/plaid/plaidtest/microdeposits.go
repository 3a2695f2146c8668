package plaidtest

import (
	"fmt"
)

// Plaid's micro-deposit flows an item can be made by.
const (
	FlowSameDay   = "same_day"
	FlowAutomated = "automated"
)

// MicroDepositCode is the code the Same Day deposit's description carries
// at this fake Plaid (the user types it into Link in update mode).
const MicroDepositCode = "ABC"

// sameDayAttempts is how many codes Plaid lets a user try.
const sameDayAttempts = 3

// linkAuth is what a link token's auth object enabled.
type linkAuth struct {
	sameDay, automated bool
}

// linkAuthOf reads LinkTokenCreateRequestAuth's micro-deposit switches.
func linkAuthOf(req map[string]any) linkAuth {
	a, _ := req["auth"].(map[string]any)
	sameDay, _ := a["same_day_microdeposits_enabled"].(bool)
	automated, _ := a["automated_microdeposits_enabled"].(bool)
	return linkAuth{sameDay: sameDay, automated: automated}
}

// checkAuthOptions refuses what Plaid refuses of the auth object: Same Day
// Micro-deposits with a product other than auth (or transfer).
func checkAuthOptions(req map[string]any) (answer, bool) {
	if !linkAuthOf(req).sameDay {
		return answer{}, false
	}
	products, _ := req["products"].([]any)
	for _, p := range products {
		if p != "auth" && p != "transfer" {
			return plaidError(400, "INVALID_REQUEST", "INVALID_FIELD", "same day micro-deposits allow only the auth or transfer product"), true
		}
	}
	return answer{}, false
}

// microDepositItem makes a new item at an institution without Auth one of
// Plaid's micro-deposit items, as Link does when its token enabled the
// flow: one checking account whose numbers the user typed, pending
// verification. Without an enabled flow the item stays as it is (no Auth).
func (s *Server) microDepositItem(it *Item, auth linkAuth) {
	inst := s.institutions[it.InstitutionID]
	if inst == nil || inst.Auth {
		return
	}
	status := ""
	switch {
	case auth.automated && inst.AutomatedMicrodeposits:
		it.MicroDeposits, status = FlowAutomated, "pending_automatic_verification"
	case auth.sameDay:
		it.MicroDeposits, status = FlowSameDay, "pending_manual_verification"
	default:
		return
	}
	it.Accounts = it.Accounts[:1]
	it.Accounts[0].VerificationStatus = status
	it.attemptsLeft = sameDayAttempts
}

// ConfirmMicroDeposits plays the user typing the Same Day deposit's code
// into Link opened in update mode for the item (linkTok must be such a
// token): the right code makes the account manually_verified; a wrong one
// spends one of three attempts, and the last makes it verification_failed
// (both as Plaid's Link does; Plaid sends no webhook for either). It
// reports whether the code was right.
func (s *Server) ConfirmMicroDeposits(linkTok, code string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lt, ok := s.linkTokens[linkTok]
	if !ok || s.clock.Now().After(lt.expires) || lt.accessToken == "" {
		return false, fmt.Errorf("plaidtest: not a live update-mode link token")
	}
	id, ok := s.accessTokens[lt.accessToken]
	if !ok {
		return false, fmt.Errorf("plaidtest: the update-mode item is gone")
	}
	it := s.items[id]
	a := &it.Accounts[0]
	if it.MicroDeposits != FlowSameDay || a.VerificationStatus != "pending_manual_verification" {
		return false, fmt.Errorf("plaidtest: the item has no Same Day micro-deposit to confirm")
	}
	if code == MicroDepositCode {
		a.VerificationStatus = "manually_verified"
		return true, nil
	}
	if it.attemptsLeft--; it.attemptsLeft <= 0 {
		a.VerificationStatus = "verification_failed"
	}
	return false, nil
}

// SetVerificationStatus does what Plaid's /sandbox/item/set_verification_status
// does for an Automated Micro-deposits item: the account's
// verification_status becomes status (automatically_verified or
// verification_expired), and the AUTH webhook Plaid sends for it is
// returned, signed.
func (s *Server) SetVerificationStatus(itemID, accountID, status string) Webhook {
	s.t.Helper()
	code := map[string]string{"automatically_verified": "AUTOMATICALLY_VERIFIED", "verification_expired": "VERIFICATION_EXPIRED"}[status]
	if code == "" {
		s.t.Fatalf("plaidtest: set_verification_status takes automatically_verified or verification_expired, not %q", status)
	}
	s.mu.Lock()
	found := false
	if it, ok := s.items[itemID]; ok {
		for i := range it.Accounts {
			if it.Accounts[i].ID == accountID {
				it.Accounts[i].VerificationStatus, found = status, true
			}
		}
	}
	s.mu.Unlock()
	if !found {
		s.t.Fatalf("plaidtest: no account %q of item %q", accountID, itemID)
	}
	return s.FireWebhook(itemID, "AUTH", code, map[string]any{"account_id": accountID, "error": nil})
}
