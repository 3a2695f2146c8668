package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
	"github.com/kluis-dev/kluis/vault"
)

// startPlaidWebhooks is kluis over the Plaid adapter and an in-test Plaid
// whose webhooks are signed at clock's time (so that two deliveries of the
// same body can be told apart by their iat, as Plaid's are).
func startPlaidWebhooks(t *testing.T, clock *testClock) *bankEnv {
	t.Helper()
	be := &bankEnv{plaid: plaidtest.NewServer(t, plaidtest.WithSpec(plaidtest.LoadSpec(t)), plaidtest.WithClock(clock))}
	be.Env = apitest.Start(t, func(d *api.Deps) {
		p, err := plaid.New(plaid.Options{ClientID: be.plaid.ClientID, Secret: be.plaid.Secret, BaseURL: be.plaid.URL, MaxRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := banklink.New(banklink.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Provider: p,
			Keys: d.Pseudonyms.(*vault.SystemKeys), Logger: d.Logger})
		if err != nil {
			t.Fatal(err)
		}
		be.svc, d.BankLink = svc, svc
	})
	return be
}

// repair runs update mode on the item at the in-test Plaid.
func (be *bankEnv) repair(t *testing.T, tok, itemID string) {
	t.Helper()
	s := be.newSession(t, tok, itemID)
	if _, err := be.plaid.CompleteLink(s.LinkToken, ""); err != nil {
		t.Fatal(err)
	}
	be.exchange(t, tok, s.ID, "public-update-"+s.ID, 201)
}

// Issue 14 point 3, reproduced: the same ITEM_LOGIN_REQUIRED body after the
// user repaired the item is a new event (Plaid signs it anew, at a later
// iat), and puts the item back to login_required; a replay of one delivery
// (even re-signed) is a duplicate.
func TestASecondLoginRequiredAfterARepairIsApplied(t *testing.T) {
	clock := &testClock{}
	clock.Advance(-2 * time.Minute) // Plaid's clock: the first webhook two minutes ago
	be := startPlaidWebhooks(t, clock)
	tok := userToken(t, "user_plaid_second_login")
	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	pid := providerItemID(t, be, it.ID)

	first := be.plaid.LoginRequiredWebhook(pid)
	status, body := be.webhookPost(t, "plaid", first.Header, first.Body)
	want(t, status, 200, body, nil)
	if got := be.itemStatus(t, it.ID); got != "login_required" {
		t.Fatalf("after the first webhook: %s", got)
	}
	be.plaid.SetLoginRequired(pid, true)
	be.repair(t, tok, it.ID)
	if got := be.itemStatus(t, it.ID); got != "active" {
		t.Fatalf("after the repair: %s", got)
	}
	status, body = be.webhookPost(t, "plaid", first.Header, first.Body)
	want(t, status, 200, body, nil)
	if got := be.itemStatus(t, it.ID); got != "active" {
		t.Fatalf("a replay of the first delivery changed the item: %s", got)
	}

	clock.Advance(time.Minute)
	second := be.plaid.LoginRequiredWebhook(pid)
	if string(second.Body) != string(first.Body) {
		t.Fatal("the test needs the same body twice")
	}
	status, body = be.webhookPost(t, "plaid", second.Header, second.Body)
	want(t, status, 200, body, nil)
	if got := be.itemStatus(t, it.ID); got != "login_required" {
		t.Fatalf("the second ITEM_LOGIN_REQUIRED after a repair left the item %s", got)
	}
	if n := auditCount(t, be.Env, `action = 'item.login_required' AND target = $1`, it.ID); n != 2 {
		t.Fatalf("item.login_required audited %d times, want 2", n)
	}
}

// outcomeOf reads the recorded outcome of the newest webhook event.
func (be *bankEnv) lastOutcome(t *testing.T) (string, string) {
	t.Helper()
	var kind, outcome string
	if err := be.DB.Pool.QueryRow(context.Background(),
		`SELECT kind, outcome FROM provider_webhook_events ORDER BY received_at DESC, event_id LIMIT 1`).Scan(&kind, &outcome); err != nil {
		t.Fatal(err)
	}
	return kind, outcome
}

// Issue 14 point 3: every ITEM and AUTH code is handled or deliberately
// ignored, each as an idempotent state transition, and a redelivery of
// one delivery (re-signed) is a duplicate.
func TestEveryItemAndAuthWebhookCodeIsAStateTransitionOrDeliberatelyIgnored(t *testing.T) {
	clock := &testClock{}
	clock.Advance(-4 * time.Minute)
	be := startPlaidWebhooks(t, clock)
	tok := userToken(t, "user_plaid_every_code")
	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	pid := providerItemID(t, be, it.ID)
	acct := it.Accounts[0]
	var providerAccountID string
	if err := be.DB.Pool.QueryRow(context.Background(), `SELECT provider_account_id FROM accounts WHERE id = $1`, acct.ID).Scan(&providerAccountID); err != nil {
		t.Fatal(err)
	}
	deliver := func(t *testing.T, w plaidtest.Webhook) {
		t.Helper()
		status, body := be.webhookPost(t, "plaid", w.Header, w.Body)
		want(t, status, 200, body, nil)
	}
	errorWebhook := func(code string) plaidtest.Webhook {
		return be.plaid.FireWebhook(pid, "ITEM", "ERROR", map[string]any{"error": map[string]any{
			"error_type": "ITEM_ERROR", "error_code": code, "error_message": "x", "display_message": nil}})
	}
	steps := []struct {
		name        string
		webhook     func() plaidtest.Webhook
		wantKind    string
		wantOutcome string
		wantStatus  string
	}{
		{"ERROR INSTITUTION_DOWN is recorded and changes nothing", func() plaidtest.Webhook { return errorWebhook("INSTITUTION_DOWN") }, "item_error", "ignored", "active"},
		{"ERROR ITEM_LOCKED needs the login", func() plaidtest.Webhook { return errorWebhook("ITEM_LOCKED") }, "login_required", "applied", "login_required"},
		{"ITEM_LOGIN_REQUIRED again changes nothing", func() plaidtest.Webhook { return be.plaid.LoginRequiredWebhook(pid) }, "login_required", "no_change", "login_required"},
		{"LOGIN_REPAIRED repairs", func() plaidtest.Webhook { return be.plaid.FireWebhook(pid, "ITEM", "LOGIN_REPAIRED", nil) }, "login_repaired", "applied", "active"},
		{"LOGIN_REPAIRED again changes nothing", func() plaidtest.Webhook { return be.plaid.FireWebhook(pid, "ITEM", "LOGIN_REPAIRED", nil) }, "login_repaired", "no_change", "active"},
		{"PENDING_EXPIRATION asks for update mode", func() plaidtest.Webhook {
			return be.plaid.FireWebhook(pid, "ITEM", "PENDING_EXPIRATION", map[string]any{"consent_expiration_time": "2030-01-01T00:00:00Z"})
		}, "login_required", "applied", "login_required"},
		{"LOGIN_REPAIRED after it", func() plaidtest.Webhook { return be.plaid.FireWebhook(pid, "ITEM", "LOGIN_REPAIRED", nil) }, "login_repaired", "applied", "active"},
		{"AUTH PRODUCT_PERMISSIONS_REQUIRED asks for update mode", func() plaidtest.Webhook {
			return be.plaid.FireWebhook(pid, "AUTH", "PRODUCT_PERMISSIONS_REQUIRED", nil)
		}, "login_required", "applied", "login_required"},
		{"LOGIN_REPAIRED once more", func() plaidtest.Webhook { return be.plaid.FireWebhook(pid, "ITEM", "LOGIN_REPAIRED", nil) }, "login_repaired", "applied", "active"},
		{"WEBHOOK_UPDATE_ACKNOWLEDGED is recorded", func() plaidtest.Webhook {
			return be.plaid.FireWebhook(pid, "ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED", map[string]any{"new_webhook_url": "https://kluis.test/webhooks/plaid"})
		}, "webhook_updated", "ignored", "active"},
		{"AUTH AUTOMATICALLY_VERIFIED records Plaid's verdict", func() plaidtest.Webhook {
			return be.plaid.FireWebhook(pid, "AUTH", "AUTOMATICALLY_VERIFIED", map[string]any{"account_id": providerAccountID})
		}, "auth_verified", "applied", "active"},
		{"AUTOMATICALLY_VERIFIED again changes nothing", func() plaidtest.Webhook {
			return be.plaid.FireWebhook(pid, "AUTH", "AUTOMATICALLY_VERIFIED", map[string]any{"account_id": providerAccountID})
		}, "auth_verified", "no_change", "active"},
		{"AUTH VERIFICATION_EXPIRED records it", func() plaidtest.Webhook {
			return be.plaid.FireWebhook(pid, "AUTH", "VERIFICATION_EXPIRED", map[string]any{"account_id": providerAccountID})
		}, "auth_expired", "applied", "active"},
		{"AUTH DEFAULT_UPDATE is deliberately ignored", func() plaidtest.Webhook {
			return be.plaid.FireWebhook(pid, "AUTH", "DEFAULT_UPDATE", map[string]any{"account_ids_with_new_numbers": []string{}, "account_ids_with_updated_numbers": map[string]any{}})
		}, "unknown", "ignored", "active"},
		{"NEW_ACCOUNTS_AVAILABLE reads the accounts", func() plaidtest.Webhook { return be.plaid.FireWebhook(pid, "ITEM", "NEW_ACCOUNTS_AVAILABLE", nil) }, "new_accounts", "no_change", "active"},
	}
	for _, st := range steps {
		clock.Advance(10 * time.Second)
		w := st.webhook()
		deliver(t, w)
		kind, outcome := be.lastOutcome(t)
		if kind != st.wantKind || outcome != st.wantOutcome || be.itemStatus(t, it.ID) != st.wantStatus {
			t.Fatalf("%s: kind %s outcome %s item %s, want %s %s %s", st.name, kind, outcome, be.itemStatus(t, it.ID),
				st.wantKind, st.wantOutcome, st.wantStatus)
		}
		before := be.webhookEvents(t)
		deliver(t, be.plaid.Redeliver(w))
		if be.webhookEvents(t) != before {
			t.Fatalf("%s: a redelivery was recorded as a new event", st.name)
		}
	}
	var pvs string
	_ = be.DB.Pool.QueryRow(context.Background(), `SELECT provider_verification_status FROM accounts WHERE id = $1`, acct.ID).Scan(&pvs)
	if pvs != "verification_expired" {
		t.Fatalf("provider verification status = %q", pvs)
	}
}
