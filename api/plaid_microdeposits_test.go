package api_test

import (
	"encoding/json"
	"sync"
	"testing"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
	"github.com/kluis-dev/kluis/verification/sandboxrail"
)

// startPlaidMicroDeposits is kluis over the Plaid adapter with Plaid's Same
// Day and Automated Micro-deposits turned on, verification connected to
// bank linking as cmd/kluis connects them, and the sandbox rail for manual
// accounts.
func startPlaidMicroDeposits(t *testing.T) (*bankEnv, *verifyEnv) {
	t.Helper()
	be := &bankEnv{plaid: plaidtest.NewServer(t, plaidtest.WithSpec(plaidtest.LoadSpec(t)))}
	ve := &verifyEnv{clock: &testClock{}}
	be.Env = apitest.Start(t, func(d *api.Deps) {
		keys := d.Pseudonyms.(*vault.SystemKeys)
		p, err := plaid.New(plaid.Options{ClientID: be.plaid.ClientID, Secret: be.plaid.Secret, BaseURL: be.plaid.URL, MaxRetries: -1,
			SameDayMicrodeposits: true, AutomatedMicrodeposits: true})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := banklink.New(banklink.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Provider: p, Keys: keys, Logger: d.Logger})
		if err != nil {
			t.Fatal(err)
		}
		be.svc, d.BankLink = svc, svc
		ve.rail = sandboxrail.New(d.DB, keys, 0, ve.clock)
		ve.svc, err = verification.New(verification.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Accounts: banklink.NewAccountStore(d.DB), Keys: keys, Rail: ve.rail,
			Clock: ve.clock, Logger: d.Logger})
		if err != nil {
			t.Fatal(err)
		}
		svc.SetAccountVerifications(ve.svc)
		d.Verification = ve.svc
	})
	ve.Env = be.Env
	return be, ve
}

// openVerification is the account's open verification, named by the
// conflict a new start answers.
func (ve *verifyEnv) openVerification(t *testing.T, tok, accountID string) verificationBody {
	t.Helper()
	status, resp := ve.call(t, "POST", "/v1/accounts/"+accountID+"/verifications", tok, `{"method":"auto"}`)
	mustError(t, status, resp, 409, "conflict")
	var e struct {
		Error struct {
			VerificationID string `json:"verification_id"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(resp), &e); err != nil || e.Error.VerificationID == "" {
		t.Fatalf("the conflict names no verification: %s", resp)
	}
	return ve.verification(t, tok, e.Error.VerificationID)
}

func (ve *verifyEnv) verification(t *testing.T, tok, id string) verificationBody {
	t.Helper()
	status, resp := ve.call(t, "GET", "/v1/verifications/"+id, tok, "")
	var v struct {
		verificationBody
		ProviderChecked bool `json:"provider_checked"`
	}
	want(t, status, 200, resp, &v)
	if !v.ProviderChecked || v.Method != "micro_deposits" || v.AnswerKind != "" {
		t.Fatalf("not a provider-checked micro-deposit verification: %s", resp)
	}
	return v.verificationBody
}

func (ve *verifyEnv) accountStatus(t *testing.T, tok, accountID string) string {
	t.Helper()
	status, resp := ve.call(t, "GET", "/v1/accounts/"+accountID, tok, "")
	var a accountBody
	want(t, status, 200, resp, &a)
	return a.VerificationStatus
}

// confirmInLink plays the user opening Link in update mode for the item
// and typing code; kluis hears of it from the session's exchange.
func (be *bankEnv) confirmInLink(t *testing.T, tok, itemID, code string) bool {
	t.Helper()
	s := be.newSession(t, tok, itemID)
	right, err := be.plaid.ConfirmMicroDeposits(s.LinkToken, code)
	if err != nil {
		t.Fatal(err)
	}
	be.exchange(t, tok, s.ID, "public-update-"+s.ID, 201)
	return right
}

// Issue 14 point 2: an account at an institution without instant auth is
// verified through Plaid's Same Day Micro-deposits: the link token enables
// them, the pending state shows as kluis's posted, the user confirms the
// code in Link's update mode, and the verification becomes verified (a
// wrong code changes nothing; kluis's confirm route is not the way). A
// manual account entered in kluis is still verified by kluis's own rail.
func TestANoAuthAccountIsVerifiedByPlaidsSameDayMicroDeposits(t *testing.T) {
	be, ve := startPlaidMicroDeposits(t)
	tok := userToken(t, "user_plaid_same_day")
	it := be.linkPlaid(t, tok, plaidtest.InstitutionNoAuth)
	reqs := be.plaid.LinkTokenRequests()
	auth, _ := reqs[len(reqs)-1]["auth"].(map[string]any)
	if auth["same_day_microdeposits_enabled"] != true || auth["automated_microdeposits_enabled"] != true {
		t.Fatalf("link token auth options = %v", auth)
	}
	if len(it.Accounts) != 1 {
		t.Fatalf("a Same Day item has one account: %+v", it.Accounts)
	}
	acct := it.Accounts[0].ID
	if got := ve.accountStatus(t, tok, acct); got != "pending" {
		t.Fatalf("account verification_status = %s, want pending", got)
	}
	v := ve.openVerification(t, tok, acct)
	if v.Status != "posted" {
		t.Fatalf("pending_manual_verification shows as %s, want posted", v.Status)
	}
	if n := ve.events(t, "verification.posted", v.ID); n != 1 {
		t.Fatalf("%d verification.posted events", n)
	}
	status, resp := ve.confirm(t, tok, v.ID, `{"code":"ABC"}`)
	mustError(t, status, resp, 409, "conflict")

	if be.confirmInLink(t, tok, it.ID, "XYZ") {
		t.Fatal("a wrong code was right")
	}
	if got := ve.verification(t, tok, v.ID).Status; got != "posted" {
		t.Fatalf("after a wrong code: %s", got)
	}
	if !be.confirmInLink(t, tok, it.ID, plaidtest.MicroDepositCode) {
		t.Fatal("the right code was wrong")
	}
	if got := ve.verification(t, tok, v.ID).Status; got != "verified" {
		t.Fatalf("after the right code in Link: %s, want verified", got)
	}
	if got := ve.accountStatus(t, tok, acct); got != "verified" {
		t.Fatalf("account verification_status = %s, want verified", got)
	}
	if n := ve.events(t, "verification.verified", v.ID); n != 1 {
		t.Fatalf("%d verification.verified events", n)
	}
	if n := auditCount(t, be.Env, `action = 'verification.verified' AND target = $1 AND actor = 'plaid'`, v.ID); n != 1 {
		t.Fatalf("verification.verified audited %d times by plaid", n)
	}
	// A second update-mode session changes nothing.
	be.exchange(t, tok, be.newSession(t, tok, it.ID).ID, "public-update-again", 201)
	if n := ve.events(t, "verification.verified", v.ID); n != 1 {
		t.Fatalf("%d verification.verified events after another session", n)
	}

	manual := ve.manualAccount(t, tok, canaryAccount)
	mv := ve.start(t, tok, manual.ID, "micro_deposits", 201)
	if mv.AnswerKind != "amounts" {
		t.Fatalf("a manual account's verification = %+v", mv)
	}
	d := ve.deposits(t, tok, mv.ID)
	status, resp = ve.confirm(t, tok, mv.ID, amountsBody(d[0], d[1]))
	var got verificationBody
	want(t, status, 200, resp, &got)
	if got.Status != "verified" {
		t.Fatalf("the manual account by kluis's rail: %+v", got)
	}
}

// Issue 14 point 2: Plaid's Automated Micro-deposits and the AUTH webhooks
// drive verified and expired; Same Day codes used up drive failed (in Link,
// or through Plaid's SMS flow and its webhook), after which the account
// must be linked again. Each AUTH webhook redelivered changes nothing.
func TestPlaidsAuthWebhooksAndLinkDriveVerifiedExpiredAndFailed(t *testing.T) {
	be, ve := startPlaidMicroDeposits(t)
	be.plaid.AddInstitution(plaidtest.Institution{ID: "ins_automd", Name: "Automated Deposits Bank", AutomatedMicrodeposits: true})
	tok := userToken(t, "user_plaid_auth_webhooks")

	for _, tc := range []struct{ status, want, event string }{
		{"automatically_verified", "verified", "verification.verified"},
		{"verification_expired", "expired", "verification.expired"},
	} {
		it := be.linkPlaid(t, tok, "ins_automd")
		acct := it.Accounts[0].ID
		v := ve.openVerification(t, tok, acct)
		if v.Status != "sent" {
			t.Fatalf("pending_automatic_verification shows as %s, want sent", v.Status)
		}
		pid := providerItemID(t, be, it.ID)
		pit, _ := be.plaid.Item(pid)
		wh := be.plaid.SetVerificationStatus(pid, pit.Accounts[0].ID, tc.status)
		for range 2 {
			status, body := be.webhookPost(t, "plaid", wh.Header, wh.Body)
			want(t, status, 200, body, nil)
		}
		if got := ve.verification(t, tok, v.ID).Status; got != tc.want {
			t.Fatalf("after %s: %s, want %s", tc.status, got, tc.want)
		}
		if got := ve.accountStatus(t, tok, acct); got != tc.want {
			t.Fatalf("account after %s: %s", tc.status, got)
		}
		if n := ve.events(t, tc.event, v.ID); n != 1 {
			t.Fatalf("%d %s events", n, tc.event)
		}
	}

	// Same Day: three wrong codes in Link.
	it := be.linkPlaid(t, tok, plaidtest.InstitutionNoAuth)
	v := ve.openVerification(t, tok, it.Accounts[0].ID)
	for range 3 {
		be.confirmInLink(t, tok, it.ID, "NOPE")
	}
	if got := ve.verification(t, tok, v.ID).Status; got != "failed" {
		t.Fatalf("after three wrong codes: %s, want failed", got)
	}
	if n := ve.events(t, "verification.failed", v.ID); n != 1 {
		t.Fatalf("%d verification.failed events", n)
	}
	status, resp := ve.call(t, "POST", "/v1/accounts/"+it.Accounts[0].ID+"/verifications", tok, `{"method":"auto"}`)
	mustError(t, status, resp, 409, "conflict")

	// Same Day through Plaid's SMS flow: its webhook says how it ended.
	for _, tc := range []struct{ sms, want string }{{"MANUALLY_VERIFIED", "verified"}, {"VERIFICATION_FAILED", "failed"}} {
		it := be.linkPlaid(t, tok, plaidtest.InstitutionNoAuth)
		v := ve.openVerification(t, tok, it.Accounts[0].ID)
		pid := providerItemID(t, be, it.ID)
		pit, _ := be.plaid.Item(pid)
		wh := be.plaid.FireWebhook(pid, "AUTH", "SMS_MICRODEPOSITS_VERIFICATION", map[string]any{
			"account_id": pit.Accounts[0].ID, "status": tc.sms})
		status, body := be.webhookPost(t, "plaid", wh.Header, wh.Body)
		want(t, status, 200, body, nil)
		if got := ve.verification(t, tok, v.ID).Status; got != tc.want {
			t.Fatalf("after SMS %s: %s, want %s", tc.sms, got, tc.want)
		}
	}
}

// Issue 14 point 2, under concurrency: once the user typed the right code,
// several update-mode sessions exchanged at once and Plaid's SMS webhook
// all report the one verdict; the verification is verified exactly once
// (one transition, one audit entry, one event).
func TestConcurrentReportsOfOneVerdictVerifyOnce(t *testing.T) {
	be, ve := startPlaidMicroDeposits(t)
	tok := userToken(t, "user_plaid_concurrent_verdict")
	it := be.linkPlaid(t, tok, plaidtest.InstitutionNoAuth)
	v := ve.openVerification(t, tok, it.Accounts[0].ID)
	const sessions = 6
	ids := make([]string, sessions)
	for i := range ids {
		s := be.newSession(t, tok, it.ID)
		ids[i] = s.ID
		if i == 0 {
			if right, err := be.plaid.ConfirmMicroDeposits(s.LinkToken, plaidtest.MicroDepositCode); err != nil || !right {
				t.Fatalf("confirm = %v, %v", right, err)
			}
		}
	}
	pid := providerItemID(t, be, it.ID)
	pit, _ := be.plaid.Item(pid)
	wh := be.plaid.FireWebhook(pid, "AUTH", "SMS_MICRODEPOSITS_VERIFICATION", map[string]any{
		"account_id": pit.Accounts[0].ID, "status": "MANUALLY_VERIFIED"})
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			status, _, body := be.call(t, "POST", "/v1/link/sessions/"+id+"/exchange", tok, `{"public_token":"public-update-`+id+`"}`)
			if status != 201 {
				t.Errorf("exchange = %d %s", status, body)
			}
		}(ids[i])
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if status, body := be.webhookPost(t, "plaid", wh.Header, wh.Body); status != 200 {
			t.Errorf("webhook = %d %s", status, body)
		}
	}()
	wg.Wait()
	if got := ve.verification(t, tok, v.ID).Status; got != "verified" {
		t.Fatalf("verification is %s, want verified", got)
	}
	if n := ve.events(t, "verification.verified", v.ID); n != 1 {
		t.Fatalf("%d verification.verified events, want 1", n)
	}
	if n := auditCount(t, be.Env, `action = 'verification.verified' AND target = $1`, v.ID); n != 1 {
		t.Fatalf("verified audited %d times, want 1", n)
	}
}
