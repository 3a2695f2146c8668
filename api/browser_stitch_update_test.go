package api_test

import (
	"testing"

	"github.com/chromedp/chromedp"
)

// TestBrowserRepairsAStitchItemThroughTheHostedPageInUpdateMode: in
// Chromium, an update-mode session's hosted_link_url for a Stitch item whose
// bank asks the user to authorize again says "Reconnect your bank", sends
// the browser to Stitch's consent page (where the user signs in with the
// same bank login again), and comes back to kluis's done page; the app's
// exchange of the token the page handed over repairs the item under the
// same credential_ref.
func TestBrowserRepairsAStitchItemThroughTheHostedPageInUpdateMode(t *testing.T) {
	be := startBrowser(t)
	ctx := be.ctx
	bk := &bankEnv{Env: be.Env}
	it := be.hostedStitchItem(t, be.tok)
	user := providerItemID(t, bk, it.ID)
	ref := credRefOf(t, bk, it.ID)
	before := bk.credentialVersion(t, ref)
	be.stitch.SetReauthRequired(user, true)
	hook := be.stitch.ReauthorizationWebhook(user)
	if status, _, body := be.do(t, "POST", "/webhooks/stitch", "", "application/json", string(hook.Body), hook.Header.Clone()); status != 200 {
		t.Fatalf("webhook: %d %s", status, body)
	}
	if s := bk.itemStatus(t, it.ID); s != "login_required" {
		t.Fatalf("item status %s, want login_required", s)
	}

	id, link := be.linkSession(t, be.tok, `{"item_id":"`+it.ID+`"}`)
	be.run(ctx, "the update page", chromedp.Navigate(be.KluisURL+link), chromedp.WaitVisible(chromedp.CSS("#oauth-continue")))
	be.waitFor(ctx, "the reconnect step", `document.querySelector('h1').textContent === 'Reconnect your bank'`)
	be.checkA11y(ctx, "the Stitch step in update mode")
	// At Stitch the user signs in with the same bank login again.
	be.stitch.SignInAs(user)
	be.run(ctx, "continue to Stitch", chromedp.Click(chromedp.CSS("#oauth-continue")), chromedp.WaitVisible(chromedp.CSS("#stitch-allow")))
	be.run(ctx, "allow", chromedp.Click(chromedp.CSS("#stitch-allow")))
	be.waitFor(ctx, "back from Stitch", `location.pathname === '/link/callback/stitch' && document.querySelector('h1').textContent === 'Bank reconnected'`)
	be.checkA11y(ctx, "the done page after reauthorization")

	fixed := be.exchangeSession(t, be.tok, id, 201)
	if fixed.ID != it.ID || fixed.Status != "active" {
		t.Fatalf("after update mode: %+v", fixed)
	}
	if credRefOf(t, bk, it.ID) != ref {
		t.Fatal("update mode changed the item's credential_ref")
	}
	if v := bk.credentialVersion(t, ref); v.Version <= before.Version || v.Pending {
		t.Fatalf("credential version %d → %+v", before.Version, v)
	}
	if bk.outboxCount(t, "item.repaired", it.ID) != 1 {
		t.Fatal("no item.repaired event")
	}
}
