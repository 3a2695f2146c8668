package api_test

import (
	"context"
	"testing"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/stitch/stitchtest"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
	"github.com/kluis-dev/kluis/verification/stitchbav"
)

// startStitchBAV is kluis with Stitch as its bank provider and its bank
// account verifier; Stitch's webhooks complete pending verifications.
func startStitchBAV(t *testing.T) (*verifyEnv, *stitchtest.Server) {
	t.Helper()
	ve := &verifyEnv{clock: &testClock{}}
	srv := stitchtest.NewServer(t, stitchtest.WithClock(ve.clock))
	ve.Env = apitest.Start(t, func(d *api.Deps) {
		keys := d.Pseudonyms.(*vault.SystemKeys)
		p := newStitch(t, srv, ve.clock)
		bank, err := banklink.New(banklink.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Provider: p, Keys: keys,
			Logger: d.Logger, Clock: ve.clock,
			BankVerificationDone: func(ctx context.Context, provider, ref string) error {
				return ve.svc.CompleteBankVerification(ctx, provider, ref)
			}})
		if err != nil {
			t.Fatal(err)
		}
		d.BankLink = bank
		ve.svc, err = verification.New(verification.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Accounts: banklink.NewAccountStore(d.DB), Keys: keys,
			Clock: ve.clock, Logger: d.Logger, BankVerifiers: []verification.BankVerifier{stitchbav.New(p)}})
		if err != nil {
			t.Fatal(err)
		}
		d.Verification = ve.svc
		limits := api.DefaultRateLimits()
		delete(limits.Operations, api.OpVerificationStart)
		delete(limits.Operations, api.OpManualAccount)
		d.RateLimits = &limits
	})
	return ve, srv
}

// TestABankAccountVerificationThroughStitchReachesEachOutcome is issue 15's
// BAV done-when against the Stitch test server: verifyBankAccountDetails
// with a client token, each outcome, and a pending one completed by
// Stitch's webhook (or by the poll job).
func TestABankAccountVerificationThroughStitchReachesEachOutcome(t *testing.T) {
	ve, srv := startStitchBAV(t)
	for _, tc := range []struct {
		suffix, status string
		check          func(c map[string]*bool) bool
	}{
		{stitchtest.BAVVerified, "verified", func(c map[string]*bool) bool {
			return isTrue(c["account_exists"]) && isTrue(c["accepts_debits"]) && isTrue(c["id_number_matches"]) && isTrue(c["name_matches"])
		}},
		{stitchtest.BAVNoAccount, "failed", func(c map[string]*bool) bool { return isFalse(c["account_exists"]) && c["account_open"] == nil }},
		{stitchtest.BAVClosed, "failed", func(c map[string]*bool) bool { return isFalse(c["account_open"]) && isFalse(c["accepts_credits"]) }},
		{stitchtest.BAVIDMismatch, "failed", func(c map[string]*bool) bool { return isFalse(c["id_number_matches"]) }},
		{stitchtest.BAVNameMismatch, "verified", func(c map[string]*bool) bool { return isFalse(c["name_matches"]) }},
		{stitchtest.BAVUnknown, "failed", func(c map[string]*bool) bool { return c["account_exists"] == nil && c["id_number_matches"] == nil }},
	} {
		t.Run("an account ending in "+tc.suffix, func(t *testing.T) {
			tok := userToken(t, "user_stitch_bav_"+tc.suffix)
			acct := ve.zaAccount(t, tok, tc.suffix)
			status, v, body := ve.startBAV(t, tok, acct, "bank_account_verification")
			if status != 201 || v.Status != tc.status || !tc.check(v.Checks) {
				t.Fatalf("verification: %d %s", status, body)
			}
		})
	}

	t.Run("a pending one is completed by Stitch's webhook", func(t *testing.T) {
		tok := userToken(t, "user_stitch_bav_pending")
		acct := ve.zaAccount(t, tok, stitchtest.BAVPendingIDMismatch)
		status, v, body := ve.startBAV(t, tok, acct, "auto")
		if status != 201 || v.Status != "pending" || v.Method != "bank_account_verification" {
			t.Fatalf("start: %d %s", status, body)
		}
		res, err := ve.svc.PollBankVerifications(context.Background())
		if err != nil || res.Completed != 0 {
			t.Fatalf("a poll before the bank answered completed something: %+v %v", res, err)
		}
		hooks := srv.BankAnswers()
		if len(hooks) != 1 {
			t.Fatalf("%d webhooks", len(hooks))
		}
		status, resp := (&bankEnv{Env: ve.Env}).webhookPost(t, "stitch", hooks[0].Header, hooks[0].Body)
		if status != 200 {
			t.Fatalf("webhook: %d %s", status, resp)
		}
		status, body = ve.call(t, "GET", "/v1/verifications/"+v.ID, tok, "")
		var got bavBody
		want(t, status, 200, body, &got)
		if got.Status != "failed" || !isFalse(got.Checks["id_number_matches"]) {
			t.Fatalf("after the webhook: %s", body)
		}
	})

	t.Run("a pending one is completed by the poll job", func(t *testing.T) {
		tok := userToken(t, "user_stitch_bav_poll")
		acct := ve.zaAccount(t, tok, stitchtest.BAVPendingVerified)
		_, v, _ := ve.startBAV(t, tok, acct, "bank_account_verification")
		srv.BankAnswers() // the webhooks are lost
		res, err := ve.svc.PollBankVerifications(context.Background())
		if err != nil || res.Completed != 1 {
			t.Fatalf("poll: %+v %v", res, err)
		}
		status, body := ve.call(t, "GET", "/v1/verifications/"+v.ID, tok, "")
		var got bavBody
		want(t, status, 200, body, &got)
		if got.Status != "verified" {
			t.Fatalf("after the poll: %s", body)
		}
	})
}
