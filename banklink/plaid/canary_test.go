package plaid_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
)

// errorTexts is every text an error can show: its message, its formatted
// forms, its fields, and each cause in its tree (what a careless log line
// would print).
func errorTexts(err error) []string {
	var out []string
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		out = append(out, e.Error(), fmt.Sprintf("%v", e), fmt.Sprintf("%+v", e), fmt.Sprintf("%#v", e))
		var ke *kluis.Error
		if errors.As(e, &ke) {
			out = append(out, fmt.Sprint(ke.Fields))
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		}
	}
	walk(err)
	return out
}

func TestSecretsNeverAppearInErrors(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	p := newProvider(t, srv, func(o *plaid.Options) { o.MaxRetries = -1 })
	ctx := context.Background()
	ex := link(t, srv, p, plaidtest.InstitutionAuth)
	item, _ := srv.Item(ex.ProviderItemID)
	public, err := srv.CreatePublicToken(plaidtest.InstitutionAuth)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{srv.Secret, ex.AccessToken, public}
	for _, a := range item.Accounts {
		secrets = append(secrets, a.Number)
	}
	echo := func(s string) []byte {
		return []byte(`{"error_message":"` + s + `","error_code":"` + s + `","request_id":"` + s + `"}`)
	}

	var errs []error
	collect := func(err error) {
		t.Helper()
		if err == nil {
			t.Fatal("a failure scenario succeeded")
		}
		errs = append(errs, err)
	}
	calls := map[string]func() error{
		plaidtest.EndpointLinkTokenCreate: func() error {
			_, err := p.CreateLinkToken(ctx, banklink.LinkTokenRequest{ClientUserID: "pseudo-user-1", AccessToken: ex.AccessToken})
			return err
		},
		plaidtest.EndpointPublicTokenExchange: func() error { _, err := p.ExchangePublicToken(ctx, public); return err },
		plaidtest.EndpointAccountsGet:         func() error { _, err := p.GetAccounts(ctx, ex.AccessToken); return err },
		plaidtest.EndpointAuthGet:             func() error { _, err := p.GetAuth(ctx, ex.AccessToken); return err },
		plaidtest.EndpointAccessTokenInvalidate: func() error {
			_, err := p.RotateAccessToken(ctx, ex.AccessToken)
			return err
		},
		plaidtest.EndpointItemRemove: func() error { return p.RemoveItem(ctx, ex.AccessToken) },
	}
	faults := []plaidtest.Fault{
		// Plaid-shaped errors whose error_message echoes the request body.
		{Status: http.StatusBadRequest, ErrorType: "INVALID_INPUT", ErrorCode: "INVALID_ACCESS_TOKEN"},
		{Status: http.StatusBadRequest, ErrorType: "INVALID_REQUEST", ErrorCode: "INVALID_FIELD"},
		{Status: http.StatusTooManyRequests, ErrorType: "RATE_LIMIT_EXCEEDED", ErrorCode: "RATE_LIMIT_EXCEEDED"},
		{Status: http.StatusInternalServerError, ErrorType: "API_ERROR", ErrorCode: "INTERNAL_SERVER_ERROR"},
		// Every field of the error echoing a secret.
		{Status: http.StatusBadRequest, RawBody: echo(ex.AccessToken)},
		{Status: http.StatusBadRequest, RawBody: echo(item.Accounts[0].Number)},
		{Status: http.StatusInternalServerError, RawBody: echo(srv.Secret)},
		{Status: http.StatusOK, RawBody: []byte(`{"numbers":{"ach":[{"account_id":"","account":"` + item.Accounts[0].Number + `","routing":"1"}]}}`)},
		{Status: http.StatusOK, RawBody: []byte("{" + ex.AccessToken)},
		{Drop: true},
	}
	for endpoint, call := range calls {
		for _, f := range faults {
			srv.FailNextWith(endpoint, 1, f)
			if err := call(); err != nil || f.Status != http.StatusOK { // /item/remove takes any 200
				collect(err)
			}
		}
	}

	// Real refusals: a burnt public token, a rotated token, a removed item.
	_, err = p.ExchangePublicToken(ctx, "public-sandbox-"+ex.AccessToken)
	collect(err)
	srv.SetLoginRequired(ex.ProviderItemID, true)
	_, err = p.GetAuth(ctx, ex.AccessToken)
	collect(err)
	bad := newProvider(t, srv, func(o *plaid.Options) { o.Secret = srv.Secret + "-wrong" })
	_, err = bad.GetAccounts(ctx, ex.AccessToken)
	collect(err)

	// Webhooks whose bodies carry the secrets.
	body := []byte(`{"webhook_type":"ITEM","webhook_code":"ERROR","item_id":"` + ex.AccessToken + `","account":"` + item.Accounts[1].Number + `"}`)
	for _, f := range []plaidtest.Forgery{plaidtest.HS256, plaidtest.StaleIat, plaidtest.BodyMismatch, plaidtest.UnknownKid, plaidtest.WrongKey} {
		wh := srv.Sign(body, f)
		_, err := p.VerifyWebhook(ctx, wh.Header, wh.Body)
		collect(err)
	}
	_, err = p.VerifyWebhook(ctx, http.Header{plaidtest.VerificationHeader: {srv.Secret + "." + ex.AccessToken + "." + public}}, body)
	collect(err)

	srv.Close()
	_, err = p.GetAccounts(ctx, ex.AccessToken)
	collect(err)

	for _, err := range errs {
		for _, text := range errorTexts(err) {
			for _, s := range secrets {
				if strings.Contains(text, s) {
					t.Errorf("error text %q contains a secret", text)
				}
			}
			if strings.Contains(text, "plaidtest:") {
				t.Errorf("error text %q carries Plaid's error_message", text)
			}
		}
	}
}
