package plaid_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/banklinktest"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
)

// TestPlaidPassesTheProviderContract runs banklinktest over the Plaid
// adapter against the in-test Plaid (every request and answer checked
// against Plaid's OpenAPI description); down, it is the adapter pointed at
// an address where nothing answers.
func TestPlaidPassesTheProviderContract(t *testing.T) {
	banklinktest.Run(t, func(t *testing.T) banklinktest.Harness {
		srv := newServer(t)
		return banklinktest.Harness{
			Provider: newProvider(t, srv),
			Link: func(t *testing.T, linkToken string, auth bool) string {
				t.Helper()
				inst := plaidtest.InstitutionAuth
				if !auth {
					inst = plaidtest.InstitutionNoAuth
				}
				pub, err := srv.CompleteLink(linkToken, inst)
				if err != nil {
					t.Fatal(err)
				}
				return pub
			},
			LoginRequiredWebhook: func(t *testing.T, providerItemID string) (http.Header, []byte) {
				t.Helper()
				w := srv.LoginRequiredWebhook(providerItemID)
				return w.Header, w.Body
			},
			Down: func(t *testing.T) banklink.Provider {
				t.Helper()
				gone := httptest.NewServer(http.NotFoundHandler())
				gone.Close()
				return newProvider(t, srv, func(o *plaid.Options) { o.BaseURL = gone.URL })
			},
		}
	})
}
