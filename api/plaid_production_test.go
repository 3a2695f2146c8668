package api_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
	"github.com/kluis-dev/kluis/vault"
)

// Issue 14 point 1: Link is configured per session where Plaid allows it,
// and products Plaid refuses are refused by kluis, naming the field.
func TestLinkSessionsRefuseBalanceAndPassAccountFiltersToPlaid(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_plaid_link_options")

	status, _, body := be.call(t, "POST", "/v1/link/sessions", tok, `{"products":["auth","balance"]}`)
	mustError(t, status, body, 400, "invalid_request")
	if !strings.Contains(body, "products") {
		t.Fatalf("the 400 does not name the field: %s", body)
	}
	if n := be.plaid.Calls(plaidtest.EndpointLinkTokenCreate); n != 0 {
		t.Fatalf("balance was forwarded to Plaid (%d calls)", n)
	}
	for _, bad := range []string{
		`{"account_filters":{"depository":["brokerage"]}}`,
		`{"account_selection":true}`,
		`{"platform":"windows"}`,
	} {
		status, _, body := be.call(t, "POST", "/v1/link/sessions", tok, bad)
		mustError(t, status, body, 400, "invalid_request")
	}

	status, _, body = be.call(t, "POST", "/v1/link/sessions", tok, `{"products":["auth"],"account_filters":{"depository":["checking","savings"]}}`)
	want(t, status, 201, body, nil)
	reqs := be.plaid.LinkTokenRequests()
	filters, _ := reqs[len(reqs)-1]["account_filters"].(map[string]any)
	dep, _ := filters["depository"].(map[string]any)
	if st, _ := dep["account_subtypes"].([]any); len(st) != 2 {
		t.Fatalf("account_filters sent = %v", reqs[len(reqs)-1]["account_filters"])
	}

	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	status, _, body = be.call(t, "POST", "/v1/link/sessions", tok, `{"item_id":"`+it.ID+`","account_selection":true}`)
	want(t, status, 201, body, nil)
	reqs = be.plaid.LinkTokenRequests()
	if upd, _ := reqs[len(reqs)-1]["update"].(map[string]any); upd["account_selection_enabled"] != true {
		t.Fatalf("update mode request = %v", reqs[len(reqs)-1])
	}
}

// startPlaidBank starts kluis over the Plaid adapter and an in-test Plaid
// that checks every request against Plaid's OpenAPI description, with the
// exchange's provider calls bounded by timeouts.
func startPlaidBank(t *testing.T, timeouts banklink.CallTimeouts, webhookURL string) *bankEnv {
	t.Helper()
	be := &bankEnv{plaid: plaidtest.NewServer(t, plaidtest.WithSpec(plaidtest.LoadSpec(t)))}
	be.Env = apitest.Start(t, func(d *api.Deps) {
		p, err := plaid.New(plaid.Options{ClientID: be.plaid.ClientID, Secret: be.plaid.Secret, BaseURL: be.plaid.URL, MaxRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := banklink.New(banklink.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Provider: p,
			Keys: d.Pseudonyms.(*vault.SystemKeys), Logger: d.Logger, CallTimeouts: timeouts, WebhookURL: webhookURL})
		if err != nil {
			t.Fatal(err)
		}
		be.svc, d.BankLink = svc, svc
	})
	return be
}

// exchangePlaid starts a session, finishes Link at inst and exchanges,
// answering the status and body.
func (be *bankEnv) exchangePlaid(t *testing.T, tok, inst string) (int, string) {
	t.Helper()
	s := be.newSession(t, tok, "")
	pub, err := be.plaid.CompleteLink(s.LinkToken, inst)
	if err != nil {
		t.Fatal(err)
	}
	status, _, body := be.call(t, "POST", "/v1/link/sessions/"+s.ID+"/exchange", tok, fmt.Sprintf(`{"public_token":%q}`, pub))
	return status, body
}

// numberRefs counts the item's accounts whose numbers are sealed.
func (be *bankEnv) numberRefs(t *testing.T, itemID string) int {
	t.Helper()
	var n int
	if err := be.DB.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM accounts WHERE item_id = $1 AND account_number_ref IS NOT NULL`, itemID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (be *bankEnv) completionPending(t *testing.T, itemID string) bool {
	t.Helper()
	var p bool
	if err := be.DB.Pool.QueryRow(context.Background(), `SELECT completion_pending FROM items WHERE id = $1`, itemID).Scan(&p); err != nil {
		t.Fatal(err)
	}
	return p
}

// Issue 14 point 8: a slow /auth/get is bounded on its own; the item the
// exchange got is kept, and the completion job seals its numbers later.
func TestASlowAuthGetLeavesAGoodItemThatTheJobCompletes(t *testing.T) {
	be := startPlaidBank(t, banklink.CallTimeouts{Auth: 100 * time.Millisecond}, "")
	tok := userToken(t, "user_plaid_slow_auth")
	be.plaid.SetLatency(plaidtest.EndpointAuthGet, 3*time.Second)
	status, body := be.exchangePlaid(t, tok, plaidtest.InstitutionAuth)
	var out struct {
		Item itemBody `json:"item"`
	}
	want(t, status, 201, body, &out)
	it := out.Item
	if it.Status != "active" || len(it.Accounts) != 2 || be.numberRefs(t, it.ID) != 0 || !be.completionPending(t, it.ID) {
		t.Fatalf("item after a slow auth = %+v (numbers %d)", it, be.numberRefs(t, it.ID))
	}
	if _, ok := be.plaid.Item(providerItemID(t, be, it.ID)); !ok {
		t.Fatal("the item was removed at Plaid")
	}
	be.plaid.SetLatency(plaidtest.EndpointAuthGet, 0)
	res, err := be.svc.CompleteItems(context.Background(), 0)
	if err != nil || res.Completed != 1 {
		t.Fatalf("CompleteItems = %+v, %v", res, err)
	}
	if be.numberRefs(t, it.ID) != 2 || be.completionPending(t, it.ID) {
		t.Fatal("the job did not complete the item")
	}
	if res, _ := be.svc.CompleteItems(context.Background(), 0); res.Completed+res.Pending+res.Failed != 0 {
		t.Fatalf("a second run found work: %+v", res)
	}
}

// Issue 14 point 8, the exchange itself: /item/public_token/exchange is
// bounded by its own deadline, well inside the request's: a slow exchange
// answers 503 (the provider's failure, to retry) rather than holding the
// request, and no item is made in kluis.
func TestASlowExchangeIsBoundedOnItsOwnDeadline(t *testing.T) {
	be := startPlaidBank(t, banklink.CallTimeouts{Exchange: 100 * time.Millisecond}, "")
	tok := userToken(t, "user_plaid_slow_exchange")
	be.plaid.SetLatency(plaidtest.EndpointPublicTokenExchange, 3*time.Second)
	status, body := be.exchangePlaid(t, tok, plaidtest.InstitutionAuth)
	mustError(t, status, body, 503, "unavailable")
	if n := be.plaid.Calls(plaidtest.EndpointAccountsGet); n != 0 {
		t.Fatalf("/accounts/get was called %d times without an access token", n)
	}
	status, _, body = be.call(t, "GET", "/v1/items", tok, "")
	var items struct {
		Items []itemBody `json:"items"`
	}
	want(t, status, 200, body, &items)
	if len(items.Items) != 0 {
		t.Fatalf("a timed-out exchange made items: %+v", items.Items)
	}
}

// Issue 14 point 8, the other read: a slow /accounts/get is bounded on its
// own deadline, not the exchange's or the request's: the exchanged item is
// kept (active, completion pending, its accounts not read yet), and the
// completion job reads its accounts and numbers once Plaid answers.
func TestASlowAccountsGetLeavesAGoodItemThatTheJobCompletes(t *testing.T) {
	be := startPlaidBank(t, banklink.CallTimeouts{Accounts: 100 * time.Millisecond}, "")
	tok := userToken(t, "user_plaid_slow_accounts")
	be.plaid.SetLatency(plaidtest.EndpointAccountsGet, 3*time.Second)
	status, body := be.exchangePlaid(t, tok, plaidtest.InstitutionAuth)
	var out struct {
		Item itemBody `json:"item"`
	}
	want(t, status, 201, body, &out)
	it := out.Item
	if it.Status != "active" || len(it.Accounts) != 0 || !be.completionPending(t, it.ID) {
		t.Fatalf("item after a slow /accounts/get = %+v", it)
	}
	if _, ok := be.plaid.Item(providerItemID(t, be, it.ID)); !ok {
		t.Fatal("the item was removed at Plaid")
	}
	if n := be.plaid.Calls(plaidtest.EndpointAuthGet); n != 0 {
		t.Fatalf("/auth/get was called %d times without the accounts", n)
	}
	be.plaid.SetLatency(plaidtest.EndpointAccountsGet, 0)
	res, err := be.svc.CompleteItems(context.Background(), 0)
	if err != nil || res.Completed != 1 {
		t.Fatalf("CompleteItems = %+v, %v", res, err)
	}
	status, _, body = be.call(t, "GET", "/v1/items/"+it.ID, tok, "")
	var got itemBody
	want(t, status, 200, body, &got)
	if len(got.Accounts) != 2 || be.numberRefs(t, it.ID) != 2 || be.completionPending(t, it.ID) {
		t.Fatalf("after the job: %d accounts, %d numbers, pending %v", len(got.Accounts), be.numberRefs(t, it.ID), be.completionPending(t, it.ID))
	}
}

// Issue 14 points 4 and 8 in update mode: PRODUCT_NOT_READY on /auth/get
// while the user repairs the item does not fail the repair (it is not the
// user's situation, and Plaid kept the item): the item is active again,
// the account Plaid now shares is added, and the completion job seals its
// number once Plaid has it.
func TestProductNotReadyDuringUpdateModeIsCompletedLater(t *testing.T) {
	be := startPlaidBank(t, banklink.CallTimeouts{}, "")
	tok := userToken(t, "user_plaid_update_not_ready")
	status, body := be.exchangePlaid(t, tok, plaidtest.InstitutionAuth)
	var out struct {
		Item itemBody `json:"item"`
	}
	want(t, status, 201, body, &out)
	it := out.Item
	pid := providerItemID(t, be, it.ID)
	be.plaid.SetLoginRequired(pid, true)
	wh := be.plaid.LoginRequiredWebhook(pid)
	status, body = be.webhookPost(t, "plaid", wh.Header, wh.Body)
	want(t, status, 200, body, nil)
	if be.plaid.AddAccount(pid) == "" {
		t.Fatal("no account added at Plaid")
	}
	s := be.newSession(t, tok, it.ID)
	if _, err := be.plaid.CompleteLink(s.LinkToken, ""); err != nil {
		t.Fatal(err)
	}
	be.plaid.FailNext(plaidtest.EndpointAuthGet, 1, "PRODUCT_NOT_READY")
	repaired := be.exchange(t, tok, s.ID, "public-update-"+s.ID, 201)
	if repaired.Status != "active" || len(repaired.Accounts) != 3 || be.numberRefs(t, it.ID) != 2 || !be.completionPending(t, it.ID) {
		t.Fatalf("after update mode with auth not ready: %+v, %d numbers, pending %v", repaired, be.numberRefs(t, it.ID), be.completionPending(t, it.ID))
	}
	res, err := be.svc.CompleteItems(context.Background(), 0)
	if err != nil || res.Completed != 1 || be.numberRefs(t, it.ID) != 3 || be.completionPending(t, it.ID) {
		t.Fatalf("CompleteItems = %+v, %v; %d numbers", res, err, be.numberRefs(t, it.ID))
	}
}

// Issue 14 point 4: every Plaid error is a kluis answer, never a 500, and
// the item is kept wherever Plaid kept it.
func TestPlaidErrorsDuringAnExchangeKeepTheItemWherePlaidKeptIt(t *testing.T) {
	be := startPlaidBank(t, banklink.CallTimeouts{}, "")
	tok := userToken(t, "user_plaid_errors")
	item := func(t *testing.T, body string) itemBody {
		t.Helper()
		var out struct {
			Item itemBody `json:"item"`
		}
		want(t, 201, 201, body, &out)
		return out.Item
	}

	t.Run("PRODUCT_NOT_READY on auth keeps the item and the job completes it", func(t *testing.T) {
		be.plaid.FailNext(plaidtest.EndpointAuthGet, 1, "PRODUCT_NOT_READY")
		status, body := be.exchangePlaid(t, tok, plaidtest.InstitutionAuth)
		want(t, status, 201, body, nil)
		it := item(t, body)
		if !be.completionPending(t, it.ID) || be.numberRefs(t, it.ID) != 0 {
			t.Fatal("PRODUCT_NOT_READY was taken as unsupported")
		}
		if res, err := be.svc.CompleteItems(context.Background(), 0); err != nil || res.Completed != 1 || be.numberRefs(t, it.ID) != 2 {
			t.Fatalf("completion = %+v, %v", res, err)
		}
	})
	for _, code := range []string{"ACCESS_NOT_GRANTED", "NO_ACCOUNTS", "INSTITUTION_NOT_RESPONDING", "INTERNAL_SERVER_ERROR", "RATE_LIMIT_EXCEEDED"} {
		t.Run(code+" on accounts keeps the item for later", func(t *testing.T) {
			be.plaid.FailNext(plaidtest.EndpointAccountsGet, 1, code)
			status, body := be.exchangePlaid(t, tok, plaidtest.InstitutionAuth)
			want(t, status, 201, body, nil)
			it := item(t, body)
			if !be.completionPending(t, it.ID) || len(it.Accounts) != 0 {
				t.Fatalf("item = %+v", it)
			}
			if _, ok := be.plaid.Item(providerItemID(t, be, it.ID)); !ok {
				t.Fatal("the item Plaid kept was removed")
			}
		})
	}
	t.Run("ITEM_LOGIN_REQUIRED on accounts keeps the item, login_required", func(t *testing.T) {
		be.plaid.FailNext(plaidtest.EndpointAccountsGet, 1, "ITEM_LOGIN_REQUIRED")
		status, body := be.exchangePlaid(t, tok, plaidtest.InstitutionAuth)
		want(t, status, 201, body, nil)
		if it := item(t, body); it.Status != "login_required" {
			t.Fatalf("item = %+v", it)
		}
	})
	t.Run("a token Plaid refuses right after the exchange keeps no item", func(t *testing.T) {
		before := len(be.listItems(t, tok))
		be.plaid.FailNext(plaidtest.EndpointAccountsGet, 1, "INVALID_ACCESS_TOKEN")
		status, body := be.exchangePlaid(t, tok, plaidtest.InstitutionAuth)
		mustError(t, status, body, 422, "invalid_token")
		if len(be.listItems(t, tok)) != before {
			t.Fatal("an item was kept")
		}
	})
	t.Run("Plaid refusing kluis's link token request is 503 provider_error", func(t *testing.T) {
		be.plaid.FailNext(plaidtest.EndpointLinkTokenCreate, 1, "INVALID_FIELD")
		status, _, body := be.call(t, "POST", "/v1/link/sessions", tok, `{}`)
		mustErrorReason(t, status, body, 503, "unavailable", "provider_error")
	})
	t.Run("Plaid failing the exchange is 503 and keeps nothing", func(t *testing.T) {
		before := len(be.listItems(t, tok))
		be.plaid.FailNext(plaidtest.EndpointPublicTokenExchange, 1, "INTERNAL_SERVER_ERROR")
		status, body := be.exchangePlaid(t, tok, plaidtest.InstitutionAuth)
		mustError(t, status, body, 503, "unavailable")
		if len(be.listItems(t, tok)) != before {
			t.Fatal("an item was kept")
		}
	})
	t.Run("update mode whose accounts Plaid will not share is 422 access_not_granted", func(t *testing.T) {
		it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
		s := be.newSession(t, tok, it.ID)
		if _, err := be.plaid.CompleteLink(s.LinkToken, ""); err != nil {
			t.Fatal(err)
		}
		be.plaid.FailNext(plaidtest.EndpointAccountsGet, 1, "ACCESS_NOT_GRANTED")
		status, _, body := be.call(t, "POST", "/v1/link/sessions/"+s.ID+"/exchange", tok, `{"public_token":"public-update-mode"}`)
		mustError(t, status, body, 422, "access_not_granted")
	})
}

func (be *bankEnv) listItems(t *testing.T, tok string) []itemBody {
	t.Helper()
	status, _, body := be.call(t, "GET", "/v1/items", tok, "")
	var out struct {
		Items []itemBody `json:"items"`
	}
	want(t, status, 200, body, &out)
	return out.Items
}

// Issue 14 point 7: a change of KLUIS_BANK_WEBHOOK_URL reaches the items
// linked before it, through the job, in batches, and a run that is cut
// short resumes where it stopped.
func TestTheWebhookUpdateJobPointsExistingItemsAtTheNewURL(t *testing.T) {
	const oldURL, newURL = "https://old.kluis.test/webhooks/plaid", "https://new.kluis.test/webhooks/plaid"
	be := startPlaidBank(t, banklink.CallTimeouts{}, oldURL)
	tok := userToken(t, "user_plaid_webhook_url")
	var pids []string
	for range 5 {
		it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
		pid := providerItemID(t, be, it.ID)
		if got, _ := be.plaid.Item(pid); got.Webhook != oldURL {
			t.Fatalf("linked with webhook %q", got.Webhook)
		}
		pids = append(pids, pid)
	}
	// The first run is cut short as it starts its third item: the provider
	// cancels the run's context there (no timing involved), so two items are
	// updated and recorded, the third is not, and it never reaches Plaid.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cut := &cutAfter{Provider: be.providerForTest(t), n: 2, cancel: cancel}
	svc, err := banklink.New(banklink.Options{DB: be.DB, Vault: be.Deps.Vault, Auditor: be.Deps.Auditor, Provider: cut,
		Keys: be.System, WebhookURL: newURL})
	if err != nil {
		t.Fatal(err)
	}
	res, _ := svc.UpdateWebhooks(ctx, 2)
	calls := be.plaid.Calls(plaidtest.EndpointItemWebhookUpdate)
	if res.Updated != 2 || calls != 2 {
		t.Fatalf("the cut-short run = %+v with %d calls to Plaid", res, calls)
	}
	be.plaid.FailNext(plaidtest.EndpointItemWebhookUpdate, 1, "INTERNAL_SERVER_ERROR")
	res, err = svc.UpdateWebhooks(context.Background(), 2)
	if err != nil || res.Failed != 1 {
		t.Fatalf("second run = %+v, %v", res, err)
	}
	res, err = svc.UpdateWebhooks(context.Background(), 2)
	if err != nil || res.Failed != 0 || res.Updated != 1 {
		t.Fatalf("third run = %+v, %v", res, err)
	}
	for _, pid := range pids {
		if got, _ := be.plaid.Item(pid); got.Webhook != newURL {
			t.Fatalf("item %s has webhook %q", pid, got.Webhook)
		}
	}
	// Each item was told once and the one Plaid failed twice: items
	// recorded are never asked again.
	if got := be.plaid.Calls(plaidtest.EndpointItemWebhookUpdate); got != 6 {
		t.Fatalf("%d webhook updates (after the cut %d), want 6", got, calls)
	}
	if res, _ := svc.UpdateWebhooks(context.Background(), 2); res.Updated+res.Failed != 0 {
		t.Fatalf("a run with nothing to do = %+v", res)
	}
	if n := auditCount(t, be.Env, `action = 'item.webhook_updated'`); n != 5 {
		t.Fatalf("item.webhook_updated audited %d times", n)
	}
}

// cutAfter is a Plaid provider whose webhook updates cancel the caller's
// run as the call after the first n starts, so a test can cut a job short
// at an exact point.
type cutAfter struct {
	*plaid.Provider
	n      int
	calls  atomic.Int32
	cancel context.CancelFunc
}

// UpdateWebhook cancels the run on call n+1 (once; that call's context must
// be the run's), then passes the call on: with the cancelled context it
// never reaches Plaid. Later runs' calls pass straight through.
func (c *cutAfter) UpdateWebhook(ctx context.Context, accessToken, url string) error {
	if int(c.calls.Add(1)) == c.n+1 {
		c.cancel()
		<-ctx.Done()
	}
	return c.Provider.UpdateWebhook(ctx, accessToken, url)
}

func (be *bankEnv) providerForTest(t *testing.T) *plaid.Provider {
	t.Helper()
	p, err := plaid.New(plaid.Options{ClientID: be.plaid.ClientID, Secret: be.plaid.Secret, BaseURL: be.plaid.URL, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Completion runs on every instance: many concurrent runs complete a
// pending item once, sealing each account's number exactly once.
func TestConcurrentCompletionRunsSealEachNumberOnce(t *testing.T) {
	be := startPlaidBank(t, banklink.CallTimeouts{}, "")
	tok := userToken(t, "user_plaid_concurrent_completion")
	be.plaid.FailNext(plaidtest.EndpointAuthGet, 1, "PRODUCT_NOT_READY")
	status, body := be.exchangePlaid(t, tok, plaidtest.InstitutionAuth)
	var out struct {
		Item itemBody `json:"item"`
	}
	want(t, status, 201, body, &out)
	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := be.svc.CompleteItems(context.Background(), 0); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	var sealed, audited int
	if err := be.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM credentials c JOIN items i ON i.subject_id = c.subject_id
		WHERE i.id = $1 AND c.kind = 'account_number'`, out.Item.ID).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	audited = auditCount(t, be.Env, `action = 'item.completed' AND target = $1`, out.Item.ID)
	if sealed != 2 || be.numberRefs(t, out.Item.ID) != 2 || be.completionPending(t, out.Item.ID) || audited != 1 {
		t.Fatalf("sealed %d, refs %d, audited %d", sealed, be.numberRefs(t, out.Item.ID), audited)
	}
}
