package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
	"github.com/kluis-dev/kluis/verification"
)

// Issue 14: a provider-checked verification expires at Plaid's window, not
// kluis's. Past kluis's own window the expiry job expires kluis's rail
// verification (a manual account's micro-deposits) and leaves Plaid's
// Automated and Same Day ones where Plaid has them; they end when Plaid
// says so: its VERIFICATION_EXPIRED webhook, or verification_expired read
// again from the account (here in an update-mode session's exchange).
func TestAProviderCheckedVerificationExpiresAtPlaidsWindowNotKluiss(t *testing.T) {
	be, ve := startPlaidMicroDeposits(t)
	be.plaid.AddInstitution(plaidtest.Institution{ID: "ins_automd", Name: "Automated Deposits Bank", AutomatedMicrodeposits: true})
	tok := userToken(t, "user_plaid_provider_window")
	ctx := context.Background()

	byWebhook := be.linkPlaid(t, tok, "ins_automd")
	byReread := be.linkPlaid(t, tok, "ins_automd")
	sameDay := be.linkPlaid(t, tok, plaidtest.InstitutionNoAuth)
	auto1 := ve.openVerification(t, tok, byWebhook.Accounts[0].ID)
	auto2 := ve.openVerification(t, tok, byReread.Accounts[0].ID)
	manual := ve.manualAccount(t, tok, canaryAccount)
	kluisRail := ve.start(t, tok, manual.ID, "micro_deposits", 201)
	posted := ve.openVerification(t, tok, sameDay.Accounts[0].ID)
	if auto1.Status != "sent" || auto2.Status != "sent" || posted.Status != "posted" {
		t.Fatalf("Plaid's pending verifications = %s, %s, %s", auto1.Status, auto2.Status, posted.Status)
	}

	ve.clock.Advance(verification.DefaultWindow + time.Hour)
	n, err := ve.svc.ExpireDue(ctx)
	if err != nil || n != 1 {
		t.Fatalf("expired %d (%v), want 1: kluis's rail verification only", n, err)
	}
	status, resp := ve.call(t, "GET", "/v1/verifications/"+kluisRail.ID, tok, "")
	var got verificationBody
	want(t, status, 200, resp, &got)
	if got.Status != "expired" {
		t.Fatalf("kluis's rail verification past kluis's window is %s, want expired", got.Status)
	}
	for _, v := range []verificationBody{auto1, auto2, posted} {
		if now := ve.verification(t, tok, v.ID); now.Status != v.Status {
			t.Fatalf("a provider-checked verification past kluis's window went %s → %s", v.Status, now.Status)
		}
		if n := ve.events(t, "verification.expired", v.ID); n != 0 {
			t.Fatalf("%d verification.expired events for a provider-checked verification", n)
		}
	}
	if n, err := ve.svc.ExpireDue(ctx); err != nil || n != 0 {
		t.Fatalf("a second run expired %d (%v)", n, err)
	}

	// Plaid's window ends it: the AUTH webhook.
	pid := providerItemID(t, be, byWebhook.ID)
	pit, _ := be.plaid.Item(pid)
	wh := be.plaid.SetVerificationStatus(pid, pit.Accounts[0].ID, "verification_expired")
	status, body := be.webhookPost(t, "plaid", wh.Header, wh.Body)
	want(t, status, 200, body, nil)
	if got := ve.verification(t, tok, auto1.ID).Status; got != "expired" {
		t.Fatalf("after Plaid's VERIFICATION_EXPIRED: %s, want expired", got)
	}
	// Or the account read again: Plaid expired it and its webhook was lost.
	// The completion job reads an item with a waiting account again once a
	// day (the backstop kluis's own expiry was).
	pid = providerItemID(t, be, byReread.ID)
	pit, _ = be.plaid.Item(pid)
	be.plaid.SetVerificationStatus(pid, pit.Accounts[0].ID, "verification_expired")
	if res, err := be.svc.CompleteItems(ctx, 0); err != nil || res.Rechecked != 0 {
		t.Fatalf("an item read within the day was read again: %+v, %v", res, err)
	}
	if got := ve.verification(t, tok, auto2.ID).Status; got != "sent" {
		t.Fatalf("before kluis read it: %s", got)
	}
	if _, err := be.DB.Pool.Exec(ctx, `UPDATE items SET updated_at = updated_at - interval '25 hours' WHERE id = $1`, byReread.ID); err != nil {
		t.Fatal(err)
	}
	if res, err := be.svc.CompleteItems(ctx, 0); err != nil || res.Rechecked != 1 || res.Completed+res.Failed != 0 {
		t.Fatalf("the waiting item a day later: %+v, %v", res, err)
	}
	if got := ve.verification(t, tok, auto2.ID).Status; got != "expired" {
		t.Fatalf("after the account was read again: %s, want expired", got)
	}
	if res, err := be.svc.CompleteItems(ctx, 0); err != nil || res.Rechecked != 0 {
		t.Fatalf("an item no longer waiting was read again: %+v, %v", res, err)
	}
	for _, id := range []string{auto1.ID, auto2.ID} {
		if n := ve.events(t, "verification.expired", id); n != 1 {
			t.Fatalf("%d verification.expired events for %s", n, id)
		}
	}
	// Same Day deposits wait for the user as long as Plaid lets them: read
	// again a day later, still pending at Plaid, still posted. A re-read
	// Plaid fails is tried again after the interval, not every run.
	backdate := func() {
		t.Helper()
		if _, err := be.DB.Pool.Exec(ctx, `UPDATE items SET updated_at = updated_at - interval '25 hours' WHERE id = $1`, sameDay.ID); err != nil {
			t.Fatal(err)
		}
	}
	backdate()
	be.plaid.FailNext(plaidtest.EndpointAccountsGet, 1, "INSTITUTION_DOWN")
	if res, err := be.svc.CompleteItems(ctx, 0); err != nil || res.Failed != 1 {
		t.Fatalf("a re-read Plaid fails: %+v, %v", res, err)
	}
	if res, err := be.svc.CompleteItems(ctx, 0); err != nil || res.Failed+res.Rechecked != 0 {
		t.Fatalf("a failed re-read was tried again at once: %+v, %v", res, err)
	}
	backdate()
	if res, err := be.svc.CompleteItems(ctx, 0); err != nil || res.Rechecked != 1 {
		t.Fatalf("the Same Day item a day later: %+v, %v", res, err)
	}
	if got := ve.verification(t, tok, posted.ID).Status; got != "posted" {
		t.Fatalf("the Same Day verification is %s, want posted", got)
	}
}
