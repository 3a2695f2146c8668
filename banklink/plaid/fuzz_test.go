package plaid_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
)

// FuzzVerifyWebhook feeds arbitrary Plaid-Verification values, another
// header and bodies to VerifyWebhook: it must never panic and never
// accept. Seeds are in testdata/fuzz/FuzzVerifyWebhook; more are made at
// start from the server's forgeries (none of which can be mutated into a
// valid webhook: the fuzzer cannot sign with the server's key).
func FuzzVerifyWebhook(f *testing.F) {
	clock := newFakeClock()
	srv := plaidtest.NewServer(f, plaidtest.WithClock(clock))
	p, err := plaid.New(plaid.Options{ClientID: srv.ClientID, Secret: srv.Secret, BaseURL: srv.URL, Clock: clock, MaxRetries: -1})
	if err != nil {
		f.Fatal(err)
	}
	body := []byte(`{"webhook_type":"ITEM","webhook_code":"ERROR","item_id":"item-1","error":{"error_code":"ITEM_LOGIN_REQUIRED"}}`)
	for _, forgery := range []plaidtest.Forgery{plaidtest.HS256, plaidtest.AlgNone, plaidtest.RS256, plaidtest.StaleIat, plaidtest.FutureIat, plaidtest.UnknownKid, plaidtest.WrongKey, plaidtest.ExpiredKey, plaidtest.NoIat} {
		wh := srv.Sign(body, forgery)
		f.Add(wh.Header.Get(plaidtest.VerificationHeader), "Content-Type", "application/json", wh.Body)
	}
	f.Fuzz(func(t *testing.T, token, name, value string, body []byte) {
		h := http.Header{}
		if name != "" {
			h[name] = []string{value}
		}
		if token != "" {
			h.Set(plaidtest.VerificationHeader, token)
		}
		ev, err := p.VerifyWebhook(context.Background(), h, body)
		if err == nil {
			t.Fatalf("accepted a webhook the fuzzer made: %+v", ev)
		}
		if code := kluis.ErrorCode(err); code != banklink.CodeBadSignature {
			t.Fatalf("error code %q (%v), want %q", code, err, banklink.CodeBadSignature)
		}
	})
}
