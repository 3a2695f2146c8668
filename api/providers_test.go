package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
	"github.com/kluis-dev/kluis/banklink/sandbox"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
	"github.com/kluis-dev/kluis/verification/sandboxrail"
)

// startBoth starts one kluis with two bank providers, the sandbox first
// (the default) and the Plaid adapter against an in-test Plaid, as
// KLUIS_BANK_PROVIDERS=sandbox,plaid builds them, and verification with
// the rails cmd/kluis gives them: the sandbox's accounts and manual ones
// (the default provider's rail) over the sandbox rail, Plaid's over none.
// opts configure the in-test Plaid.
func startBoth(t *testing.T, opts ...plaidtest.Option) *bankEnv {
	t.Helper()
	be := &bankEnv{plaid: plaidtest.NewServer(t, opts...)}
	be.Env = apitest.Start(t, func(d *api.Deps) {
		sb, err := sandbox.New(sandbox.Options{DB: d.DB, Secret: sandboxSecret})
		if err != nil {
			t.Fatal(err)
		}
		pl, err := plaid.New(plaid.Options{ClientID: be.plaid.ClientID, Secret: be.plaid.Secret, BaseURL: be.plaid.URL, MaxRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		providers, err := banklink.NewProviders(sb, pl)
		if err != nil {
			t.Fatal(err)
		}
		svc, err := banklink.New(banklink.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Providers: providers,
			Keys: d.Pseudonyms.(*vault.SystemKeys), Logger: d.Logger, WebhookURL: "https://kluis.test/webhooks/{provider}"})
		if err != nil {
			t.Fatal(err)
		}
		be.svc, be.sandbox, d.BankLink = svc, sb, svc
		rail := sandboxrail.New(d.DB, d.Pseudonyms.(*vault.SystemKeys), 0, nil)
		d.Verification, err = verification.New(verification.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Accounts: banklink.NewAccountStore(d.DB),
			Keys: d.Pseudonyms.(*vault.SystemKeys), Logger: d.Logger,
			Rail: rail, Rails: map[string]verification.Rail{"sandbox": rail}})
		if err != nil {
			t.Fatal(err)
		}
	})
	return be
}

// session starts a link session with the given body and returns it.
func (be *bankEnv) sessionWith(t *testing.T, tok, body string) (sessionBody, string) {
	t.Helper()
	status, _, resp := be.call(t, "POST", "/v1/link/sessions", tok, body)
	var s sessionBody
	want(t, status, 201, resp, &s)
	var p struct {
		Provider string `json:"provider"`
	}
	want(t, status, 201, resp, &p)
	return s, p.Provider
}

type providerItem struct {
	itemBody
	Provider string `json:"provider"`
}

func (be *bankEnv) items(t *testing.T, tok string) map[string]string {
	t.Helper()
	status, _, body := be.call(t, "GET", "/v1/items", tok, "")
	var out struct {
		Items []providerItem `json:"items"`
	}
	want(t, status, 200, body, &out)
	got := map[string]string{}
	for _, it := range out.Items {
		got[it.ID] = it.Provider
	}
	return got
}

// TestOneKluisLinksThroughTheSandboxAndPlaidAndEachItemKeepsItsProvider is
// issue 12's done-when: one kluis, both providers; every call about an item
// goes to the item's own provider, and a webhook to one provider's route
// touches only that provider's items.
func TestOneKluisLinksThroughTheSandboxAndPlaidAndEachItemKeepsItsProvider(t *testing.T) {
	be := startBoth(t)
	tok := userToken(t, "user_two_providers")

	// The default is the first configured: the sandbox.
	s, provider := be.sessionWith(t, tok, `{"products":["auth"]}`)
	if provider != "sandbox" {
		t.Fatalf("the default session's provider = %q, want sandbox", provider)
	}
	sbItem := be.exchange(t, tok, s.ID, be.sandboxPublicToken(t, tok, s.ID, sandbox.InstitutionAuth), 201)

	s, provider = be.sessionWith(t, tok, `{"products":["auth"],"provider":"plaid"}`)
	if provider != "plaid" {
		t.Fatalf("the session's provider = %q, want plaid", provider)
	}
	pub, err := be.plaid.CompleteLink(s.LinkToken, plaidtest.InstitutionAuth)
	if err != nil {
		t.Fatal(err)
	}
	plItem := be.exchange(t, tok, s.ID, pub, 201)
	if at, ok := be.plaid.Item(providerItemID(t, be, plItem.ID)); !ok || at.Webhook != "https://kluis.test/webhooks/plaid" {
		t.Fatalf("Plaid's item sends its webhooks to %q, want Plaid's own route", at.Webhook)
	}

	if got := be.items(t, tok); got[sbItem.ID] != "sandbox" || got[plItem.ID] != "plaid" || len(got) != 2 {
		t.Fatalf("items and their providers = %v", got)
	}

	t.Run("the sandbox's Link stand-in refuses a Plaid session", func(t *testing.T) {
		s, _ := be.sessionWith(t, tok, `{"provider":"plaid"}`)
		status, _, body := be.call(t, "POST", "/v1/sandbox/public-token", tok,
			`{"link_session_id":"`+s.ID+`","institution_id":"ins_sandbox","username":"user_good","password":"pass_good"}`)
		mustError(t, status, body, 404, "not_found")
	})

	t.Run("a provider that is not configured, or not the item's, is 400 naming the field", func(t *testing.T) {
		for _, body := range []string{`{"provider":"stitch"}`, `{"provider":"PLAID"}`, `{"provider":"` + strings.Repeat("p", 100) + `"}`,
			`{"provider":"sandbox","item_id":"` + plItem.ID + `"}`} {
			status, _, resp := be.call(t, "POST", "/v1/link/sessions", tok, body)
			mustError(t, status, resp, 400, "invalid_request")
			if !strings.Contains(resp, "provider") {
				t.Fatalf("the 400 does not name the field: %s", resp)
			}
		}
		// Update mode without a provider goes to the item's own.
		s, provider := be.sessionWith(t, tok, `{"item_id":"`+plItem.ID+`"}`)
		if provider != "plaid" || s.LinkToken == "" {
			t.Fatalf("update mode of a Plaid item went to %q", provider)
		}
	})

	t.Run("reveal names each item's own provider", func(t *testing.T) {
		for id, wantProvider := range map[string]string{sbItem.ID: "sandbox", plItem.ID: "plaid"} {
			_, it := be.internalItem(t, id)
			status, secret := be.reveal(t, be.ServiceClient(t, "payments"), it.CredentialRef)
			if status != 200 || secret["provider"] != wantProvider || secret["access_token"] == "" {
				t.Fatalf("reveal of %s: %d, provider %q", id, status, secret["provider"])
			}
		}
		_, it := be.internalItem(t, plItem.ID)
		_, secret := be.reveal(t, be.ServiceClient(t, "payments"), it.CredentialRef)
		if got, ok := be.plaid.ItemByAccessToken(secret["access_token"]); !ok || got.ID != providerItemID(t, be, plItem.ID) {
			t.Fatal("the Plaid item's revealed token is not Plaid's token for it")
		}
	})

	t.Run("rotation rotates each token at its own provider", func(t *testing.T) {
		res, err := be.svc.RotateAccessTokens(context.Background(), time.Nanosecond, 0)
		if err != nil || res.Rotated != 2 || res.Failed != 0 {
			t.Fatalf("rotation = %+v, %v", res, err)
		}
		_, it := be.internalItem(t, plItem.ID)
		_, secret := be.reveal(t, be.ServiceClient(t, "payments"), it.CredentialRef)
		if _, ok := be.plaid.ItemByAccessToken(secret["access_token"]); !ok || secret["provider"] != "plaid" {
			t.Fatal("the Plaid item's rotated token is not live at Plaid")
		}
		_, it = be.internalItem(t, sbItem.ID)
		_, secret = be.reveal(t, be.ServiceClient(t, "payments"), it.CredentialRef)
		if _, err := be.sandbox.GetAccounts(context.Background(), secret["access_token"]); err != nil || secret["provider"] != "sandbox" {
			t.Fatalf("the sandbox item's rotated token does not work at the sandbox: %v", err)
		}
	})

	t.Run("webhooks to each provider's route touch only that provider's items", func(t *testing.T) {
		plWebhook := be.plaid.LoginRequiredWebhook(providerItemID(t, be, plItem.ID))
		// Plaid's genuine webhook at the sandbox's route is the sandbox's to
		// verify: refused, and nothing changes.
		status, body := be.webhookPost(t, "sandbox", plWebhook.Header, plWebhook.Body)
		mustErrorReason(t, status, body, 401, "unauthenticated", "bad_signature")
		status, body = be.webhookPost(t, "stitch", plWebhook.Header, plWebhook.Body)
		mustError(t, status, body, 404, "not_found")
		if be.itemStatus(t, plItem.ID) != "active" || be.itemStatus(t, sbItem.ID) != "active" {
			t.Fatal("a webhook at the wrong route had an effect")
		}

		status, body = be.webhookPost(t, "plaid", plWebhook.Header, plWebhook.Body)
		want(t, status, 200, body, nil)
		if be.itemStatus(t, plItem.ID) != "login_required" || be.itemStatus(t, sbItem.ID) != "active" {
			t.Fatal("Plaid's webhook did not move only the Plaid item")
		}

		h, raw, err := be.sandbox.SignedWebhook(context.Background(), banklink.SandboxWebhook{ProviderItemID: providerItemID(t, be, sbItem.ID), Code: "ERROR"})
		if err != nil {
			t.Fatal(err)
		}
		status, body = be.webhookPost(t, "plaid", h, raw)
		mustErrorReason(t, status, body, 401, "unauthenticated", "bad_signature")
		if be.itemStatus(t, sbItem.ID) != "active" {
			t.Fatal("the sandbox's webhook at Plaid's route had an effect")
		}
		status, body = be.webhookPost(t, "sandbox", h, raw)
		want(t, status, 200, body, nil)
		if be.itemStatus(t, sbItem.ID) != "login_required" {
			t.Fatal("the sandbox's webhook was not applied")
		}
		events := map[string]int{}
		rows, err := be.DB.Pool.Query(context.Background(), `SELECT provider, count(*) FROM provider_webhook_events GROUP BY provider`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var p string
			var n int
			if err := rows.Scan(&p, &n); err != nil {
				t.Fatal(err)
			}
			events[p] = n
		}
		if events["plaid"] != 1 || events["sandbox"] != 1 || len(events) != 2 {
			t.Fatalf("webhook events by provider = %v", events)
		}
	})

	t.Run("DELETE revokes each item at its own provider", func(t *testing.T) {
		pid := providerItemID(t, be, plItem.ID)
		_, it := be.internalItem(t, sbItem.ID)
		_, secret := be.reveal(t, be.ServiceClient(t, "payments"), it.CredentialRef)
		sbToken := secret["access_token"]

		status, _, body := be.call(t, "DELETE", "/v1/items/"+plItem.ID, tok, "")
		want(t, status, 204, body, nil)
		if _, ok := be.plaid.Item(pid); ok {
			t.Fatal("the Plaid item is still at Plaid")
		}
		// (Its login is required since the webhook, but the token lives.)
		if _, err := be.sandbox.GetAccounts(context.Background(), sbToken); kluis.ErrorCode(err) == banklink.CodeInvalidToken {
			t.Fatalf("removing the Plaid item touched the sandbox item: %v", err)
		}
		if n := auditCount(t, be.Env, `action = 'item.removed' AND target = $1 AND details->>'provider' = 'plaid'`, plItem.ID); n != 1 {
			t.Fatalf("item.removed of the Plaid item audited %d times with its provider", n)
		}

		status, _, body = be.call(t, "DELETE", "/v1/items/"+sbItem.ID, tok, "")
		want(t, status, 204, body, nil)
		if _, err := be.sandbox.GetAccounts(context.Background(), sbToken); kluis.ErrorCode(err) != banklink.CodeInvalidToken {
			t.Fatalf("the sandbox token still lives after its item was removed: %v", err)
		}
		if got := be.items(t, tok); len(got) != 0 {
			t.Fatalf("items left: %v", got)
		}
	})
}

// TestTheItemsProviderDecidesInstantVerificationAndTheRail: with both
// providers, a linked account's micro-deposits go over its item's
// provider's rail (the sandbox's; Plaid has none), instant verification is
// its provider's auth, and a manual account uses the default rail.
func TestTheItemsProviderDecidesInstantVerificationAndTheRail(t *testing.T) {
	be := startBoth(t)
	tok := userToken(t, "user_two_rails")
	s, _ := be.sessionWith(t, tok, `{}`)
	sbNoAuth := be.exchange(t, tok, s.ID, be.sandboxPublicToken(t, tok, s.ID, sandbox.InstitutionNoAuth), 201)
	link := func(inst string) itemBody {
		s, _ := be.sessionWith(t, tok, `{"provider":"plaid"}`)
		pub, err := be.plaid.CompleteLink(s.LinkToken, inst)
		if err != nil {
			t.Fatal(err)
		}
		return be.exchange(t, tok, s.ID, pub, 201)
	}
	plAuth, plNoAuth := link(plaidtest.InstitutionAuth), link(plaidtest.InstitutionNoAuth)
	status, _, body := be.call(t, "POST", "/v1/accounts", tok, manualBody(canaryAccount, goodRouting))
	var manual accountBody
	want(t, status, 201, body, &manual)

	start := func(accountID string) (int, string) {
		status, _, body := be.call(t, "POST", "/v1/accounts/"+accountID+"/verifications", tok, `{"method":"auto"}`)
		return status, body
	}
	railOf := func(t *testing.T, body string) string {
		t.Helper()
		var v verificationBody
		want(t, 201, 201, body, &v)
		var rail *string
		if err := be.DB.Pool.QueryRow(context.Background(), `SELECT rail FROM verifications WHERE id = $1`, v.ID).Scan(&rail); err != nil {
			t.Fatal(err)
		}
		if rail == nil {
			return v.Method + " on no rail"
		}
		return v.Method + " on " + *rail
	}
	t.Run("a sandbox account without auth goes over the sandbox rail", func(t *testing.T) {
		status, body := start(sbNoAuth.Accounts[0].ID)
		if status != 201 || railOf(t, body) != "micro_deposits on sandbox" {
			t.Fatalf("%d %s", status, body)
		}
	})
	t.Run("a Plaid account with auth is verified instantly", func(t *testing.T) {
		status, body := start(plAuth.Accounts[0].ID)
		if status != 201 || railOf(t, body) != "instant on no rail" {
			t.Fatalf("%d %s", status, body)
		}
	})
	t.Run("a Plaid account without auth has no rail", func(t *testing.T) {
		status, body := start(plNoAuth.Accounts[0].ID)
		mustError(t, status, body, 422, "micro_deposits_unavailable")
	})
	t.Run("a manual account goes over the default provider's rail", func(t *testing.T) {
		status, body := start(manual.ID)
		if status != 201 || railOf(t, body) != "micro_deposits on sandbox" {
			t.Fatalf("%d %s", status, body)
		}
	})
}

// TestErasureRevokesEachItemAtItsOwnProvider: the erasure's revocation
// (banklink.Service.RevokeSubject) sends each of the subject's items to its
// own provider, and a provider that refuses leaves only its item unrevoked.
func TestErasureRevokesEachItemAtItsOwnProvider(t *testing.T) {
	be := startBoth(t)
	sub := "user_two_providers_erased"
	tok := userToken(t, sub)
	s, _ := be.sessionWith(t, tok, `{}`)
	sbItem := be.exchange(t, tok, s.ID, be.sandboxPublicToken(t, tok, s.ID, sandbox.InstitutionAuth), 201)
	s, _ = be.sessionWith(t, tok, `{"provider":"plaid"}`)
	pub, err := be.plaid.CompleteLink(s.LinkToken, plaidtest.InstitutionAuth)
	if err != nil {
		t.Fatal(err)
	}
	plItem := be.exchange(t, tok, s.ID, pub, 201)
	pid := providerItemID(t, be, plItem.ID)
	_, it := be.internalItem(t, sbItem.ID)
	_, secret := be.reveal(t, be.ServiceClient(t, "payments"), it.CredentialRef)
	sbToken := secret["access_token"]

	ctx := context.Background()
	subjectID, err := vault.LookupSubject(ctx, be.DB.Pool, sub)
	if err != nil {
		t.Fatal(err)
	}
	revoked := map[string]bool{}
	fence := func(_ context.Context, _ pgx.Tx, itemID string, providerRevoked bool) error {
		revoked[itemID] = providerRevoked
		return nil
	}
	// Plaid refuses this pass: only the Plaid item stays.
	be.plaid.FailNext(plaidtest.EndpointItemRemove, 1, "INTERNAL_SERVER_ERROR")
	rev, err := be.svc.RevokeSubject(ctx, subjectID, fence)
	if err != nil {
		t.Fatal(err)
	}
	if len(rev.Unrevoked) != 1 || rev.Unrevoked[0].ItemID != plItem.ID || rev.Unrevoked[0].Provider != "plaid" {
		t.Fatalf("unrevoked = %+v, want the Plaid item only", rev.Unrevoked)
	}
	if !revoked[sbItem.ID] || be.itemStatus(t, sbItem.ID) != "removed" || be.itemStatus(t, plItem.ID) != "active" {
		t.Fatalf("after the first pass: revoked %v, sandbox item %s, Plaid item %s", revoked,
			be.itemStatus(t, sbItem.ID), be.itemStatus(t, plItem.ID))
	}
	if _, err := be.sandbox.GetAccounts(ctx, sbToken); kluis.ErrorCode(err) != banklink.CodeInvalidToken {
		t.Fatalf("the sandbox token lives on: %v", err)
	}
	if _, ok := be.plaid.Item(pid); !ok {
		t.Fatal("the Plaid item is gone at Plaid though Plaid refused")
	}
	rev, err = be.svc.RevokeSubject(ctx, subjectID, fence)
	if err != nil || len(rev.Unrevoked) != 0 || !revoked[plItem.ID] {
		t.Fatalf("second pass: %+v, %v", rev, err)
	}
	if _, ok := be.plaid.Item(pid); ok {
		t.Fatal("the Plaid item is still at Plaid")
	}
}

// TestAnItemOfAProviderNoLongerConfiguredFailsClosed: after an operator
// drops Plaid from KLUIS_BANK_PROVIDERS, a Plaid item is neither sent to
// another provider nor removed without its revocation: unlinking it is 503
// and changes nothing, and a webhook to Plaid's route is 404.
func TestAnItemOfAProviderNoLongerConfiguredFailsClosed(t *testing.T) {
	be := startBoth(t)
	tok := userToken(t, "user_provider_dropped")
	s, _ := be.sessionWith(t, tok, `{"provider":"plaid"}`)
	pub, err := be.plaid.CompleteLink(s.LinkToken, plaidtest.InstitutionAuth)
	if err != nil {
		t.Fatal(err)
	}
	plItem := be.exchange(t, tok, s.ID, pub, 201)
	pid := providerItemID(t, be, plItem.ID)

	// The same database, served by a kluis configured with the sandbox only.
	sandboxOnly, err := banklink.New(banklink.Options{DB: be.DB, Vault: be.Deps.Vault, Auditor: be.Deps.Auditor,
		Provider: be.sandbox, Keys: be.System, Logger: be.Deps.Logger})
	if err != nil {
		t.Fatal(err)
	}
	if names, err := sandboxOnly.UnconfiguredProviders(context.Background()); err != nil || len(names) != 1 || names[0] != "plaid" {
		t.Fatalf("unconfigured providers of live items = %v, %v; want plaid", names, err)
	}
	_, err = sandboxOnly.DeleteItem(context.Background(), audit.User("user_provider_dropped", "req_dropped"), plItem.ID)
	if kluis.ErrorCode(err) != kluis.EUnavailable {
		t.Fatalf("unlinking an item of an unconfigured provider = %v, want unavailable", err)
	}
	if be.itemStatus(t, plItem.ID) != "active" {
		t.Fatal("the item changed")
	}
	if _, ok := be.plaid.Item(pid); !ok {
		t.Fatal("the item is gone at Plaid")
	}
	w := be.plaid.LoginRequiredWebhook(pid)
	if _, err := sandboxOnly.HandleWebhook(context.Background(), "plaid", w.Header, w.Body, "req_dropped"); kluis.ErrorCode(err) != kluis.ENotFound {
		t.Fatalf("a webhook for an unconfigured provider = %v, want not found", err)
	}
	if _, err := sandboxOnly.CreateLinkSession(context.Background(), audit.User("user_provider_dropped", "req_dropped"),
		nil, plItem.ID, ""); kluis.ErrorCode(err) != kluis.EUnavailable {
		t.Fatalf("update mode of an item of an unconfigured provider = %v, want unavailable", err)
	}
	// A service revealing its token gets nothing: without the provider's
	// adapter kluis cannot tell what of the sealed secret may leave (for
	// Stitch, the refresh token must not).
	ref, err := sandboxOnly.OwnerCredential(context.Background(), vault.ItemOwner(plItem.ID))
	if err != nil {
		t.Fatal(err)
	}
	cred, err := be.Deps.Vault.OpenOwned(context.Background(), vault.ItemOwner(plItem.ID), ref)
	if err != nil {
		t.Fatal(err)
	}
	defer clear(cred.Secret)
	if ss, err := sandboxOnly.ServiceCredential(context.Background(), cred); kluis.ErrorCode(err) != kluis.EUnavailable || ss.Secret != nil {
		t.Fatalf("the usable secret of an item of an unconfigured provider = %q, %v; want unavailable and nothing", ss.Secret, err)
	}
}

// webhookURLOf reads the webhook URL kluis recorded for an item.
func (be *bankEnv) webhookURLOf(t *testing.T, itemID string) string {
	t.Helper()
	var url *string
	if err := be.DB.Pool.QueryRow(context.Background(), `SELECT webhook_url FROM items WHERE id = $1`, itemID).Scan(&url); err != nil {
		t.Fatal(err)
	}
	if url == nil {
		return ""
	}
	return *url
}

// Issue 14 through issue 12's registry: an item left incomplete after its
// exchange is completed at its own provider, not the default; and the
// webhook-URL job asks only a provider that can update an item's webhook
// (Plaid), with that provider's own URL, never touching the sandbox's items.
func TestCompletionAndTheWebhookJobGoToEachItemsOwnProvider(t *testing.T) {
	be := startBoth(t)
	tok := userToken(t, "user_two_providers_jobs")
	s, _ := be.sessionWith(t, tok, `{"products":["auth"]}`)
	sbItem := be.exchange(t, tok, s.ID, be.sandboxPublicToken(t, tok, s.ID, sandbox.InstitutionAuth), 201)

	// Plaid is still preparing the numbers: the Plaid item is kept, pending.
	s, _ = be.sessionWith(t, tok, `{"products":["auth"],"provider":"plaid"}`)
	pub, err := be.plaid.CompleteLink(s.LinkToken, plaidtest.InstitutionAuth)
	if err != nil {
		t.Fatal(err)
	}
	be.plaid.FailNext(plaidtest.EndpointAuthGet, 1, "PRODUCT_NOT_READY")
	plItem := be.exchange(t, tok, s.ID, pub, 201)
	if !be.completionPending(t, plItem.ID) || be.numberRefs(t, plItem.ID) != 0 {
		t.Fatal("the Plaid item is not pending completion")
	}
	// The sandbox item is pending too (as if its read had been slow).
	if _, err := be.DB.Pool.Exec(context.Background(), `UPDATE items SET completion_pending = true WHERE id = $1`, sbItem.ID); err != nil {
		t.Fatal(err)
	}

	t.Run("completion reads each item at its own provider", func(t *testing.T) {
		res, err := be.svc.CompleteItems(context.Background(), 0)
		if err != nil || res.Completed != 2 || res.Failed != 0 {
			t.Fatalf("CompleteItems = %+v, %v", res, err)
		}
		if be.completionPending(t, plItem.ID) || be.completionPending(t, sbItem.ID) || be.numberRefs(t, plItem.ID) != 2 {
			t.Fatal("an item was not completed at its own provider")
		}
	})

	t.Run("an item of a provider not configured waits without holding up the others", func(t *testing.T) {
		if _, err := be.DB.Pool.Exec(context.Background(), `UPDATE items SET completion_pending = true WHERE id = $1`, plItem.ID); err != nil {
			t.Fatal(err)
		}
		sandboxOnly, err := banklink.New(banklink.Options{DB: be.DB, Vault: be.Deps.Vault, Auditor: be.Deps.Auditor,
			Provider: be.sandbox, Keys: be.System})
		if err != nil {
			t.Fatal(err)
		}
		res, err := sandboxOnly.CompleteItems(context.Background(), 1)
		if err != nil || res.Completed+res.Pending+res.Failed != 0 || !be.completionPending(t, plItem.ID) {
			t.Fatalf("CompleteItems without Plaid = %+v, %v", res, err)
		}
		if res, err := be.svc.CompleteItems(context.Background(), 0); err != nil || res.Completed != 1 || be.completionPending(t, plItem.ID) {
			t.Fatalf("CompleteItems with Plaid again = %+v, %v", res, err)
		}
	})

	t.Run("the webhook job tells only Plaid, Plaid's own URL", func(t *testing.T) {
		sbURL := be.webhookURLOf(t, sbItem.ID)
		if sbURL != "https://kluis.test/webhooks/sandbox" || be.webhookURLOf(t, plItem.ID) != "https://kluis.test/webhooks/plaid" {
			t.Fatalf("recorded webhook URLs: sandbox %q, plaid %q", sbURL, be.webhookURLOf(t, plItem.ID))
		}
		pl, err := plaid.New(plaid.Options{ClientID: be.plaid.ClientID, Secret: be.plaid.Secret, BaseURL: be.plaid.URL, MaxRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		providers, err := banklink.NewProviders(be.sandbox, pl)
		if err != nil {
			t.Fatal(err)
		}
		moved, err := banklink.New(banklink.Options{DB: be.DB, Vault: be.Deps.Vault, Auditor: be.Deps.Auditor, Providers: providers,
			Keys: be.System, WebhookURL: "https://new.kluis.test/webhooks/{provider}"})
		if err != nil {
			t.Fatal(err)
		}
		res, err := moved.UpdateWebhooks(context.Background(), 0)
		if err != nil || res.Updated != 1 || res.Failed != 0 {
			t.Fatalf("UpdateWebhooks = %+v, %v", res, err)
		}
		if at, _ := be.plaid.Item(providerItemID(t, be, plItem.ID)); at.Webhook != "https://new.kluis.test/webhooks/plaid" {
			t.Fatalf("Plaid's item sends its webhooks to %q", at.Webhook)
		}
		if be.webhookURLOf(t, plItem.ID) != "https://new.kluis.test/webhooks/plaid" || be.webhookURLOf(t, sbItem.ID) != sbURL {
			t.Fatal("the recorded webhook URLs are not each provider's own")
		}
		if res, _ := moved.UpdateWebhooks(context.Background(), 0); res.Updated+res.Failed != 0 {
			t.Fatalf("a second run found work: %+v", res)
		}
	})
}
