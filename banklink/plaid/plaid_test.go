package plaid_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newServer starts a fake Plaid that checks every request and answer
// against Plaid's OpenAPI description.
func newServer(t *testing.T, opts ...plaidtest.Option) *plaidtest.Server {
	t.Helper()
	opts = append([]plaidtest.Option{plaidtest.WithSpec(plaidtest.LoadSpec(t))}, opts...)
	return plaidtest.NewServer(t, opts...)
}

// newProvider returns an adapter for srv with short backoff, changed by
// the mutators.
func newProvider(t *testing.T, srv *plaidtest.Server, mutate ...func(*plaid.Options)) *plaid.Provider {
	t.Helper()
	opts := plaid.Options{
		ClientID:       srv.ClientID,
		Secret:         srv.Secret,
		BaseURL:        srv.URL,
		RetryBaseDelay: time.Millisecond,
		RetryMaxDelay:  5 * time.Millisecond,
	}
	for _, m := range mutate {
		m(&opts)
	}
	p, err := plaid.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// link completes a link flow at the institution and returns the exchange.
func link(t *testing.T, srv *plaidtest.Server, p *plaid.Provider, institutionID string) banklink.Exchange {
	t.Helper()
	ctx := context.Background()
	lt, err := p.CreateLinkToken(ctx, banklink.LinkTokenRequest{ClientUserID: "pseudo-user-1", Products: []string{"auth"}, WebhookURL: "https://kluis.test/webhooks/plaid"})
	if err != nil {
		t.Fatalf("CreateLinkToken: %v", err)
	}
	public, err := srv.CompleteLink(lt.Token, institutionID)
	if err != nil {
		t.Fatalf("CompleteLink: %v", err)
	}
	ex, err := p.ExchangePublicToken(ctx, public)
	if err != nil {
		t.Fatalf("ExchangePublicToken: %v", err)
	}
	return ex
}

// wantCode fails the test unless err is a provider error with code.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := kluis.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (%v), want %q", got, err, code)
	}
	if !errors.Is(err, banklink.ErrProvider) {
		t.Errorf("error %v does not wrap banklink.ErrProvider", err)
	}
}

func TestNewRefusesUnsafeConfiguration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts plaid.Options
	}{
		{"no client id", plaid.Options{Secret: "s", BaseURL: "https://sandbox.plaid.com"}},
		{"no secret", plaid.Options{ClientID: "c", BaseURL: "https://sandbox.plaid.com"}},
		{"no base URL", plaid.Options{ClientID: "c", Secret: "s"}},
		{"plain http to a remote host", plaid.Options{ClientID: "c", Secret: "s", BaseURL: "http://sandbox.plaid.com"}},
		{"credentials in the URL", plaid.Options{ClientID: "c", Secret: "s", BaseURL: "https://u:p@sandbox.plaid.com"}},
		{"a query in the URL", plaid.Options{ClientID: "c", Secret: "s", BaseURL: "https://sandbox.plaid.com?x=1"}},
		{"another scheme", plaid.Options{ClientID: "c", Secret: "s", BaseURL: "ftp://sandbox.plaid.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := plaid.New(tt.opts); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
	if _, err := plaid.New(plaid.Options{ClientID: "c", Secret: "s", BaseURL: "http://127.0.0.1:1234"}); err != nil {
		t.Errorf("plain http on loopback refused: %v", err)
	}
}

func TestLinkFlowFromLinkTokenToRemoval(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	p := newProvider(t, srv)
	ctx := context.Background()
	if p.Name() != "plaid" {
		t.Errorf("Name = %q", p.Name())
	}

	lt, err := p.CreateLinkToken(ctx, banklink.LinkTokenRequest{ClientUserID: "pseudo-user-1", WebhookURL: "https://kluis.test/webhooks/plaid"})
	if err != nil {
		t.Fatalf("CreateLinkToken: %v", err)
	}
	if lt.Token == "" || lt.ExpiresAt.IsZero() {
		t.Fatalf("link token = %+v", lt)
	}
	public, err := srv.CompleteLink(lt.Token, plaidtest.InstitutionAuth)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := p.ExchangePublicToken(ctx, public)
	if err != nil {
		t.Fatalf("ExchangePublicToken: %v", err)
	}
	item, ok := srv.Item(ex.ProviderItemID)
	if !ok || item.AccessToken != ex.AccessToken {
		t.Fatalf("exchange %+v does not match the server's item", ex.ProviderItemID)
	}
	if item.Webhook != "https://kluis.test/webhooks/plaid" {
		t.Errorf("item webhook = %q", item.Webhook)
	}

	_, err = p.ExchangePublicToken(ctx, public)
	wantCode(t, err, banklink.CodeInvalidToken)

	accts, err := p.GetAccounts(ctx, ex.AccessToken)
	if err != nil {
		t.Fatalf("GetAccounts: %v", err)
	}
	if accts.ProviderItemID != item.ID || accts.Institution.ID != plaidtest.InstitutionAuth || accts.Institution.Name != "First Platypus Bank" {
		t.Errorf("accounts item/institution = %+v", accts)
	}
	if len(accts.Accounts) != len(item.Accounts) {
		t.Fatalf("got %d accounts, want %d", len(accts.Accounts), len(item.Accounts))
	}
	for i, a := range accts.Accounts {
		w := item.Accounts[i]
		want := banklink.ProviderAccount{ProviderAccountID: w.ID, Name: w.Name, Mask: w.Mask, Type: w.Type, Subtype: w.Subtype}
		if a != want {
			t.Errorf("account %d = %+v, want %+v", i, a, want)
		}
	}

	nums, err := p.GetAuth(ctx, ex.AccessToken)
	if err != nil {
		t.Fatalf("GetAuth: %v", err)
	}
	if len(nums) != len(item.Accounts) {
		t.Fatalf("got %d numbers, want %d", len(nums), len(item.Accounts))
	}
	for i, n := range nums {
		w := item.Accounts[i]
		if n.ProviderAccountID != w.ID || n.AccountNumber != w.Number || n.RoutingNumber != w.Routing {
			t.Errorf("numbers %d do not match account %d", i, i)
		}
	}

	fresh, err := p.RotateAccessToken(ctx, ex.AccessToken)
	if err != nil {
		t.Fatalf("RotateAccessToken: %v", err)
	}
	if fresh == ex.AccessToken || fresh == "" {
		t.Fatal("rotation returned the old token")
	}
	_, err = p.GetAccounts(ctx, ex.AccessToken)
	wantCode(t, err, banklink.CodeInvalidToken)
	if _, err := p.GetAccounts(ctx, fresh); err != nil {
		t.Fatalf("GetAccounts with the new token: %v", err)
	}

	if err := p.RemoveItem(ctx, fresh); err != nil {
		t.Fatalf("RemoveItem: %v", err)
	}
	if _, ok := srv.Item(item.ID); ok {
		t.Error("the item is still at the server")
	}
	wantCode(t, p.RemoveItem(ctx, fresh), banklink.CodeInvalidToken)
}

func TestUpdateModeRepairsALoginRequiredItem(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	p := newProvider(t, srv)
	ctx := context.Background()
	ex := link(t, srv, p, plaidtest.InstitutionAuth)

	srv.SetLoginRequired(ex.ProviderItemID, true)
	_, err := p.GetAccounts(ctx, ex.AccessToken)
	wantCode(t, err, banklink.CodeItemLoginRequired)

	// Update mode sends the access token and no products; the server's
	// spec check would fail the test on any field that should not be there.
	lt, err := p.CreateLinkToken(ctx, banklink.LinkTokenRequest{ClientUserID: "pseudo-user-1", AccessToken: ex.AccessToken, Products: []string{"auth"}})
	if err != nil {
		t.Fatalf("CreateLinkToken in update mode: %v", err)
	}
	if _, err := srv.CompleteLink(lt.Token, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := p.GetAccounts(ctx, ex.AccessToken); err != nil {
		t.Fatalf("GetAccounts after repair: %v", err)
	}

	_, err = p.CreateLinkToken(ctx, banklink.LinkTokenRequest{ClientUserID: "pseudo-user-1", AccessToken: "access-sandbox-nope"})
	wantCode(t, err, banklink.CodeInvalidToken)
}

func TestInstitutionsWithoutAuthOrDown(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	p := newProvider(t, srv)
	ctx := context.Background()

	noAuth := link(t, srv, p, plaidtest.InstitutionNoAuth)
	if _, err := p.GetAccounts(ctx, noAuth.AccessToken); err != nil {
		t.Fatalf("GetAccounts at an institution without auth: %v", err)
	}
	_, err := p.GetAuth(ctx, noAuth.AccessToken)
	wantCode(t, err, banklink.CodeProductNotSupported)

	down := link(t, srv, p, plaidtest.InstitutionDown)
	_, err = p.GetAccounts(ctx, down.AccessToken)
	wantCode(t, err, banklink.CodeInstitutionDown)
	srv.SetInstitutionDown(plaidtest.InstitutionDown, false)
	if _, err := p.GetAuth(ctx, down.AccessToken); err != nil {
		t.Fatalf("GetAuth once the institution is back: %v", err)
	}
}

func TestEmptyTokensAreRefusedWithoutACall(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	p := newProvider(t, srv)
	ctx := context.Background()
	_, err := p.ExchangePublicToken(ctx, "")
	wantCode(t, err, banklink.CodeInvalidToken)
	_, err = p.GetAccounts(ctx, "")
	wantCode(t, err, banklink.CodeInvalidToken)
	_, err = p.GetAuth(ctx, "")
	wantCode(t, err, banklink.CodeInvalidToken)
	wantCode(t, p.RemoveItem(ctx, ""), banklink.CodeInvalidToken)
	_, err = p.RotateAccessToken(ctx, "")
	wantCode(t, err, banklink.CodeInvalidToken)
	_, err = p.CreateLinkToken(ctx, banklink.LinkTokenRequest{})
	wantCode(t, err, kluis.EInternal)
	for _, ep := range []string{plaidtest.EndpointPublicTokenExchange, plaidtest.EndpointAccountsGet, plaidtest.EndpointAuthGet, plaidtest.EndpointItemRemove, plaidtest.EndpointAccessTokenInvalidate, plaidtest.EndpointLinkTokenCreate} {
		if n := srv.Calls(ep); n != 0 {
			t.Errorf("%s called %d times", ep, n)
		}
	}
}

func TestWrongAPIKeysAreAProviderErrorNotAnInternalOne(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	p := newProvider(t, srv, func(o *plaid.Options) { o.Secret = "not-the-secret" })
	_, err := p.GetAccounts(context.Background(), "access-sandbox-x")
	wantCode(t, err, banklink.CodeProviderError)
	if got := kluis.ErrorMessage(err); !containsAll(got, "INVALID_API_KEYS") {
		t.Errorf("message %q does not name the code", got)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	var hits int
	var mu sync.Mutex
	redirect := plaidtest.NewServer(t) // only its URL is used, as a trap
	front := http.NewServeMux()
	front.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		http.Redirect(w, r, redirect.URL+r.URL.Path, http.StatusTemporaryRedirect)
	})
	fs := startHTTP(t, front)
	p := newProvider(t, srv, func(o *plaid.Options) { o.BaseURL = fs })
	_, err := p.GetAccounts(context.Background(), "access-sandbox-x")
	if err == nil {
		t.Fatal("a redirect answered successfully")
	}
	if n := redirect.Calls(plaidtest.EndpointAccountsGet); n != 0 {
		t.Errorf("the redirect was followed %d times", n)
	}
}

func TestEveryEndpointsRequestsWereCheckedAgainstTheSpec(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	srv := newServer(t, plaidtest.WithClock(clock))
	p := newProvider(t, srv, func(o *plaid.Options) { o.Clock = clock })
	ctx := context.Background()
	ex := link(t, srv, p, plaidtest.InstitutionAuth)
	if _, err := p.CreateLinkToken(ctx, banklink.LinkTokenRequest{ClientUserID: "pseudo-user-1", AccessToken: ex.AccessToken}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.GetAccounts(ctx, ex.AccessToken); err != nil {
		t.Fatal(err)
	}
	if _, err := p.GetAuth(ctx, ex.AccessToken); err != nil {
		t.Fatal(err)
	}
	wh := srv.FireWebhook(ex.ProviderItemID, "ITEM", "NEW_ACCOUNTS_AVAILABLE", nil)
	if _, err := p.VerifyWebhook(ctx, wh.Header, wh.Body); err != nil {
		t.Fatal(err)
	}
	if err := p.UpdateWebhook(ctx, ex.AccessToken, "https://kluis.test/webhooks/plaid/new"); err != nil {
		t.Fatal(err)
	}
	if it, _ := srv.Item(ex.ProviderItemID); it.Webhook != "https://kluis.test/webhooks/plaid/new" {
		t.Fatalf("webhook at Plaid = %q", it.Webhook)
	}
	fresh, err := p.RotateAccessToken(ctx, ex.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.RemoveItem(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	for _, ep := range []string{plaidtest.EndpointLinkTokenCreate, plaidtest.EndpointPublicTokenExchange, plaidtest.EndpointAccountsGet, plaidtest.EndpointAuthGet, plaidtest.EndpointItemRemove, plaidtest.EndpointAccessTokenInvalidate, plaidtest.EndpointWebhookKeyGet, plaidtest.EndpointItemWebhookUpdate} {
		if srv.Validated(ep) == 0 {
			t.Errorf("no request to %s was checked against the spec", ep)
		}
	}
}
