package api_test

import (
	"context"
	"testing"

	"github.com/kluis-dev/kluis/verification"
	"github.com/kluis-dev/kluis/verification/sandboxbav"
)

type bavBody struct {
	ID              string           `json:"id"`
	Method          string           `json:"method"`
	RequestedMethod string           `json:"requested_method"`
	Status          string           `json:"status"`
	Checks          map[string]*bool `json:"checks"`
}

// zaAccount enters a Capitec manual account whose number ends in suffix.
func (ve *verifyEnv) zaAccount(t *testing.T, tok, suffix string) string {
	t.Helper()
	status, body := ve.call(t, "POST", "/v1/accounts", tok, zaBody(map[string]any{"account_number": "147926" + suffix}))
	var a accountBody
	want(t, status, 201, body, &a)
	return a.ID
}

func (ve *verifyEnv) startBAV(t *testing.T, tok, accountID, method string) (int, bavBody, string) {
	t.Helper()
	status, body := ve.call(t, "POST", "/v1/accounts/"+accountID+"/verifications", tok, `{"method":"`+method+`"}`)
	var v bavBody
	if status == 201 {
		want(t, status, 201, body, &v)
	}
	return status, v, body
}

func isTrue(b *bool) bool  { return b != nil && *b }
func isFalse(b *bool) bool { return b != nil && !*b }

// TestABankAccountVerificationThroughTheSandboxReachesEachOutcome is issue
// 15's BAV done-when for the sandbox: each documented test account reaches
// its outcome, pending ones are completed by the poll job, and the checks
// say what the bank confirmed.
func TestABankAccountVerificationThroughTheSandboxReachesEachOutcome(t *testing.T) {
	ve := startVerify(t, func(o *verification.Options) { o.BankVerifiers = []verification.BankVerifier{sandboxbav.New()} })
	for _, tc := range []struct {
		suffix, status string
		check          func(c map[string]*bool) bool
	}{
		{sandboxbav.SuffixVerified, "verified", func(c map[string]*bool) bool { return isTrue(c["account_exists"]) && isTrue(c["name_matches"]) }},
		{sandboxbav.SuffixNoAccount, "failed", func(c map[string]*bool) bool { return isFalse(c["account_exists"]) && c["account_open"] == nil }},
		{sandboxbav.SuffixClosed, "failed", func(c map[string]*bool) bool { return isFalse(c["account_open"]) }},
		{sandboxbav.SuffixIDMismatch, "failed", func(c map[string]*bool) bool { return isFalse(c["id_number_matches"]) }},
		{sandboxbav.SuffixNameMismatch, "verified", func(c map[string]*bool) bool { return isFalse(c["name_matches"]) }},
		{sandboxbav.SuffixUnknown, "failed", func(c map[string]*bool) bool { return c["account_exists"] == nil && len(c) == 6 }},
	} {
		t.Run("an account ending in "+tc.suffix, func(t *testing.T) {
			tok := userToken(t, "user_bav_"+tc.suffix)
			acct := ve.zaAccount(t, tok, tc.suffix)
			status, v, body := ve.startBAV(t, tok, acct, "bank_account_verification")
			if status != 201 || v.Status != tc.status || v.Method != "bank_account_verification" || !tc.check(v.Checks) {
				t.Fatalf("verification: %d %s", status, body)
			}
		})
	}

	t.Run("a pending one is completed by the poll job", func(t *testing.T) {
		for suffix, final := range map[string]string{sandboxbav.SuffixPendingVerified: "verified", sandboxbav.SuffixPendingIDMismatch: "failed"} {
			tok := userToken(t, "user_bav_pending_"+suffix)
			acct := ve.zaAccount(t, tok, suffix)
			status, v, body := ve.startBAV(t, tok, acct, "auto")
			if status != 201 || v.Status != "pending" || v.Method != "bank_account_verification" || v.Checks != nil {
				t.Fatalf("auto on a pending test account: %d %s", status, body)
			}
			res, err := ve.svc.PollBankVerifications(context.Background())
			if err != nil || res.Completed != 1 {
				t.Fatalf("poll: %+v %v", res, err)
			}
			status, body = ve.call(t, "GET", "/v1/verifications/"+v.ID, tok, "")
			var got bavBody
			want(t, status, 200, body, &got)
			if got.Status != final || got.Checks == nil {
				t.Fatalf("after the poll: %s", body)
			}
		}
	})

	t.Run("two refusals lock the account; an unknown answer does not count", func(t *testing.T) {
		tok := userToken(t, "user_bav_lock")
		acct := ve.zaAccount(t, tok, sandboxbav.SuffixUnknown)
		for range 3 {
			if status, v, body := ve.startBAV(t, tok, acct, "bank_account_verification"); status != 201 || v.Status != "failed" {
				t.Fatalf("unknown: %d %s", status, body)
			}
		}
		acct = ve.zaAccount(t, userToken(t, "user_bav_lock2"), sandboxbav.SuffixClosed)
		tok = userToken(t, "user_bav_lock2")
		for range 2 {
			if status, _, body := ve.startBAV(t, tok, acct, "bank_account_verification"); status != 201 {
				t.Fatalf("closed: %d %s", status, body)
			}
		}
		status, _, body := ve.startBAV(t, tok, acct, "bank_account_verification")
		mustError(t, status, body, 409, "verification_locked")
	})

	t.Run("an account that is not South African is 422", func(t *testing.T) {
		tok := userToken(t, "user_bav_us")
		status, body := ve.call(t, "POST", "/v1/accounts", tok,
			`{"account_number":"0001234567","routing_number":"021000021","account_type":"checking","holder_name":"A"}`)
		var a accountBody
		want(t, status, 201, body, &a)
		status, _, body = ve.startBAV(t, tok, a.ID, "bank_account_verification")
		mustError(t, status, body, 422, "bank_account_verification_unavailable")
	})
}
