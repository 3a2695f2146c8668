// Package banklinktest is the contract suite every banklink.Provider passes
// (CONVENTIONS.md items 9 and 18), as vault/vaulttest is for key providers:
// a provider's own package calls Run from a test, over a Harness that plays
// the parts only a test can (the user in the provider's Link UI, the
// provider sending a webhook, the provider being down). A new provider
// plugs into kluis's registry (banklink.Providers) only once it passes.
//
// The suite checks what banklink relies on: the link token, the exchange of
// a single-use public token, accounts and their masks, auth numbers (and
// CodeProductNotSupported where an institution has none), removal and
// rotation killing the tokens they replace, webhook verification of a good
// body and refusal of a forged or unsigned one, the provider's errors
// mapped to kluis codes, a provider that is down answering
// kluis.EUnavailable, and no token ever in an error.
package banklinktest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
)

// Harness is a provider under test and the test's stand-ins for what
// happens outside kluis.
type Harness struct {
	// Provider is the provider under test, as kluis's registry holds it.
	Provider banklink.Provider
	// Link plays the user finishing the provider's Link UI that linkToken
	// opened, at an institution with instant auth (auth) or without, and
	// returns the public token the UI hands back.
	Link func(t *testing.T, linkToken string, auth bool) string
	// LoginRequiredWebhook returns a webhook about the provider's item,
	// as the provider signs and sends it, saying its login is required.
	LoginRequiredWebhook func(t *testing.T, providerItemID string) (http.Header, []byte)
	// Down returns the provider as it is when it cannot be reached.
	Down func(t *testing.T) banklink.Provider
}

// Factory builds a fresh Harness for one subtest.
type Factory func(t *testing.T) Harness

// Run runs the contract suite against the providers factory builds.
func Run(t *testing.T, factory Factory) {
	t.Helper()
	tests := []struct {
		name string
		run  func(t *testing.T, h Harness)
	}{
		{"a link token opens Link", testLinkToken},
		{"a public token is exchanged once", testExchange},
		{"accounts name the institution and carry no full number", testAccounts},
		{"auth gives numbers, or product_not_supported", testAuth},
		{"removal kills the token", testRemove},
		{"rotation kills the old token and the new one works", testRotate},
		{"a signed webhook verifies and a forged one is refused", testWebhook},
		{"the provider's refusals are kluis codes without the token", testErrors},
		{"a provider that is down is unavailable", testDown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, factory(t))
		})
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// link runs Link through to an exchanged access token.
func link(t *testing.T, h Harness, auth bool) banklink.Exchange {
	t.Helper()
	ctx := ctxFor(t)
	lt, err := h.Provider.CreateLinkToken(ctx, banklink.LinkTokenRequest{ClientUserID: "kluis-contract-user", Products: []string{"auth"}})
	if err != nil {
		t.Fatalf("create link token: %v", err)
	}
	pub := h.Link(t, lt.Token, auth)
	ex, err := h.Provider.ExchangePublicToken(ctx, pub)
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return ex
}

// wantCode fails unless err carries code, wraps banklink.ErrProvider, and
// says none of the secrets anywhere in its chain.
func wantCode(t *testing.T, err error, code string, secrets ...string) {
	t.Helper()
	if got := kluis.ErrorCode(err); got != code {
		t.Fatalf("error code = %q, want %q (%v)", got, code, err)
	}
	if !errors.Is(err, banklink.ErrProvider) {
		t.Errorf("the error does not wrap banklink.ErrProvider: %v", err)
	}
	secretFree(t, err, secrets...)
}

// secretFree fails if any error in err's tree says one of the secrets.
func secretFree(t *testing.T, err error, secrets ...string) {
	t.Helper()
	for err != nil {
		for _, s := range secrets {
			if s != "" && strings.Contains(err.Error(), s) {
				t.Fatalf("an error carries a token: %q", err.Error())
			}
		}
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range joined.Unwrap() {
				secretFree(t, e, secrets...)
			}
			return
		}
		err = errors.Unwrap(err)
	}
}

func testLinkToken(t *testing.T, h Harness) {
	before := time.Now()
	lt, err := h.Provider.CreateLinkToken(ctxFor(t), banklink.LinkTokenRequest{
		ClientUserID: "kluis-contract-user", Products: []string{"auth"}, WebhookURL: "https://kluis.test/webhooks/" + h.Provider.Name()})
	if err != nil {
		t.Fatal(err)
	}
	if lt.Token == "" {
		t.Fatal("the link token is empty")
	}
	if !lt.ExpiresAt.IsZero() && !lt.ExpiresAt.After(before) {
		t.Fatalf("the link token expired already: %s", lt.ExpiresAt)
	}
}

func testExchange(t *testing.T, h Harness) {
	ctx := ctxFor(t)
	lt, err := h.Provider.CreateLinkToken(ctx, banklink.LinkTokenRequest{ClientUserID: "kluis-contract-user", Products: []string{"auth"}})
	if err != nil {
		t.Fatal(err)
	}
	pub := h.Link(t, lt.Token, true)
	ex, err := h.Provider.ExchangePublicToken(ctx, pub)
	if err != nil {
		t.Fatal(err)
	}
	if ex.AccessToken == "" || ex.ProviderItemID == "" || ex.AccessToken == pub {
		t.Fatalf("exchange gave an empty or reused token, or no item id")
	}
	_, err = h.Provider.ExchangePublicToken(ctx, pub)
	wantCode(t, err, banklink.CodeInvalidToken, pub, ex.AccessToken)
}

func testAccounts(t *testing.T, h Harness) {
	ex := link(t, h, true)
	got, err := h.Provider.GetAccounts(ctxFor(t), ex.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if got.ProviderItemID != "" && got.ProviderItemID != ex.ProviderItemID {
		t.Fatalf("accounts of item %q, want %q", got.ProviderItemID, ex.ProviderItemID)
	}
	if got.Institution.ID == "" || len(got.Accounts) == 0 {
		t.Fatalf("no institution or no accounts: %+v", got.Institution)
	}
	seen := map[string]bool{}
	for _, a := range got.Accounts {
		if a.ProviderAccountID == "" || seen[a.ProviderAccountID] {
			t.Fatalf("an account id is empty or repeated: %q", a.ProviderAccountID)
		}
		seen[a.ProviderAccountID] = true
		if len(a.Mask) > 4 {
			t.Fatalf("a mask is longer than 4 digits: %d characters", len(a.Mask))
		}
	}
}

func testAuth(t *testing.T, h Harness) {
	ctx := ctxFor(t)
	ex := link(t, h, true)
	accts, err := h.Provider.GetAccounts(ctx, ex.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, a := range accts.Accounts {
		ids[a.ProviderAccountID] = true
	}
	numbers, err := h.Provider.GetAuth(ctx, ex.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if len(numbers) == 0 {
		t.Fatal("an institution with auth gave no numbers")
	}
	for _, n := range numbers {
		if !ids[n.ProviderAccountID] || n.AccountNumber == "" {
			t.Fatalf("numbers for an unknown account %q, or no number", n.ProviderAccountID)
		}
	}
	noAuth := link(t, h, false)
	_, err = h.Provider.GetAuth(ctx, noAuth.AccessToken)
	wantCode(t, err, banklink.CodeProductNotSupported, noAuth.AccessToken)
}

func testRemove(t *testing.T, h Harness) {
	ctx := ctxFor(t)
	ex := link(t, h, true)
	if err := h.Provider.RemoveItem(ctx, ex.AccessToken); err != nil {
		t.Fatal(err)
	}
	_, err := h.Provider.GetAccounts(ctx, ex.AccessToken)
	wantCode(t, err, banklink.CodeInvalidToken, ex.AccessToken)
	// banklink counts a second removal as "not revoked", never as revoked.
	wantCode(t, h.Provider.RemoveItem(ctx, ex.AccessToken), banklink.CodeInvalidToken, ex.AccessToken)
}

func testRotate(t *testing.T, h Harness) {
	ctx := ctxFor(t)
	ex := link(t, h, true)
	fresh, err := h.Provider.RotateAccessToken(ctx, ex.AccessToken)
	if kluis.ErrorCode(err) == banklink.CodeProductNotSupported {
		t.Skipf("%s does not rotate access tokens", h.Provider.Name())
	}
	if err != nil {
		t.Fatal(err)
	}
	if fresh == "" || fresh == ex.AccessToken {
		t.Fatal("rotation gave an empty or the same token")
	}
	_, err = h.Provider.GetAccounts(ctx, ex.AccessToken)
	wantCode(t, err, banklink.CodeInvalidToken, ex.AccessToken, fresh)
	if _, err := h.Provider.GetAccounts(ctx, fresh); err != nil {
		t.Fatalf("the new token does not work: %v", err)
	}
	_, err = h.Provider.RotateAccessToken(ctx, ex.AccessToken)
	wantCode(t, err, banklink.CodeInvalidToken, ex.AccessToken, fresh)
}

func testWebhook(t *testing.T, h Harness) {
	ex := link(t, h, true)
	header, body := h.LoginRequiredWebhook(t, ex.ProviderItemID)
	// The item is known to kluis: a provider may ask before it spends a
	// key fetch.
	ctx := banklink.WithWebhookItemCheck(ctxFor(t), func(_ context.Context, id string) bool { return id == ex.ProviderItemID })
	ev, err := h.Provider.VerifyWebhook(ctx, header, body)
	if err != nil {
		t.Fatalf("a good webhook was refused: %v", err)
	}
	if ev.ID == "" || ev.Kind != banklink.EventLoginRequired || ev.ProviderItemID != ex.ProviderItemID {
		t.Fatalf("event = %+v, want login_required about %q with an id", ev, ex.ProviderItemID)
	}
	again, err := h.Provider.VerifyWebhook(ctx, header, body)
	if err != nil || again.ID != ev.ID {
		t.Fatalf("the same delivery again has another id (%v): kluis could not deduplicate it", err)
	}
	forged := []struct {
		name   string
		header http.Header
		body   []byte
	}{
		{"a body changed after signing", header, []byte(strings.Replace(string(body), ex.ProviderItemID, ex.ProviderItemID+"x", 1))},
		{"a body with one more byte", header, append(append([]byte(nil), body...), ' ')},
		{"no signature", http.Header{"Content-Type": {"application/json"}}, body},
	}
	for _, f := range forged {
		t.Run(f.name, func(t *testing.T) {
			_, err := h.Provider.VerifyWebhook(ctx, f.header, f.body)
			wantCode(t, err, banklink.CodeBadSignature)
		})
	}
}

func testErrors(t *testing.T, h Harness) {
	ctx := ctxFor(t)
	const unknown = "access-unknown-0f6c1e2d-contract-token"
	_, err := h.Provider.GetAccounts(ctx, unknown)
	wantCode(t, err, banklink.CodeInvalidToken, unknown)
	_, err = h.Provider.GetAuth(ctx, unknown)
	wantCode(t, err, banklink.CodeInvalidToken, unknown)
	const unknownPublic = "public-unknown-0f6c1e2d-contract-token"
	_, err = h.Provider.ExchangePublicToken(ctx, unknownPublic)
	wantCode(t, err, banklink.CodeInvalidToken, unknownPublic)
	_, err = h.Provider.RotateAccessToken(ctx, unknown)
	if kluis.ErrorCode(err) != banklink.CodeProductNotSupported {
		wantCode(t, err, banklink.CodeInvalidToken, unknown)
	}
}

func testDown(t *testing.T, h Harness) {
	ctx := ctxFor(t)
	ex := link(t, h, true)
	down := h.Down(t)
	if down.Name() != h.Provider.Name() {
		t.Fatalf("the down provider is called %q, not %q", down.Name(), h.Provider.Name())
	}
	_, err := down.GetAccounts(ctx, ex.AccessToken)
	wantCode(t, err, kluis.EUnavailable, ex.AccessToken)
	wantCode(t, down.RemoveItem(ctx, ex.AccessToken), kluis.EUnavailable, ex.AccessToken)
	_, err = down.RotateAccessToken(ctx, ex.AccessToken)
	if kluis.ErrorCode(err) != banklink.CodeProductNotSupported {
		wantCode(t, err, kluis.EUnavailable, ex.AccessToken)
	}
	// Nothing happened at the provider: the token still works there.
	if _, err := h.Provider.GetAccounts(ctx, ex.AccessToken); err != nil {
		t.Fatalf("the token stopped working: %v", err)
	}
}
