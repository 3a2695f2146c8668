package stitch_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/banklinktest"
	"github.com/kluis-dev/kluis/banklink/stitch"
	"github.com/kluis-dev/kluis/banklink/stitch/stitchtest"
)

const redirectURI = "https://kluis.test/link/callback/stitch"

// newProvider is the adapter pointed at srv (and at base, when given).
func newProvider(t *testing.T, srv *stitchtest.Server, mods ...func(*stitch.Options)) *stitch.Provider {
	t.Helper()
	o := stitch.Options{ClientID: stitchtest.ClientID, ClientSecret: stitchtest.ClientSecret, BaseURL: srv.URL,
		AuthURL: srv.URL, RedirectURI: redirectURI, WebhookSecret: stitchtest.WebhookSecret}
	for _, m := range mods {
		m(&o)
	}
	p, err := stitch.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// link plays the user through the authorize URL and the callback, and
// returns the public token kluis's callback makes of it.
func link(t *testing.T, srv *stitchtest.Server, p *stitch.Provider, authorizeURL string, bank string) string {
	t.Helper()
	srv.LinkAt(bank)
	back, err := srv.Authorize(authorizeURL)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(back)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := p.PublicTokenFromCallback(u.Query())
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// TestStitchPassesTheProviderContract runs banklinktest over the adapter
// against the in-test Stitch; down, it is the adapter pointed at an address
// where nothing answers.
func TestStitchPassesTheProviderContract(t *testing.T) {
	banklinktest.Run(t, func(t *testing.T) banklinktest.Harness {
		srv := stitchtest.NewServer(t)
		srv.RegisterRedirect(redirectURI)
		p := newProvider(t, srv)
		return banklinktest.Harness{
			Provider: p,
			Link: func(t *testing.T, linkToken string, auth bool) string {
				t.Helper()
				bank := stitchtest.BankAuth
				if !auth {
					bank = stitchtest.BankNoAuth
				}
				return link(t, srv, p, linkToken, bank)
			},
			LoginRequiredWebhook: func(t *testing.T, providerItemID string) (http.Header, []byte) {
				w := srv.ReauthorizationWebhook(providerItemID)
				return w.Header, w.Body
			},
			Down: func(t *testing.T) banklink.Provider {
				gone := httptest.NewServer(http.NotFoundHandler())
				gone.Close()
				return newProvider(t, srv, func(o *stitch.Options) { o.BaseURL, o.AuthURL = gone.URL, gone.URL })
			},
		}
	})
}
