package plaid_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidlink"
)

func TestLinkTokensCarryTheAppOwnersSettingsAndTheSessionsOptions(t *testing.T) {
	srv := newServer(t)
	p := newProvider(t, srv, func(o *plaid.Options) {
		o.ClientName, o.Language, o.CountryCodes = "Acme Pay", "nl", []string{"US", "NL"}
		o.RedirectURI, o.AndroidPackageName = "https://app.acme.test/plaid-oauth", "com.acme.pay"
	})
	ctx := context.Background()
	if _, err := p.CreateLinkToken(ctx, banklink.LinkTokenRequest{ClientUserID: "u1", Products: []string{"auth"},
		AccountSubtypes: []string{"checking", "savings"}, Platform: banklink.PlatformWeb}); err != nil {
		t.Fatal(err)
	}
	ex := link(t, srv, p, "ins_109508")
	it, _ := srv.Item(ex.ProviderItemID)
	if _, err := p.CreateLinkToken(ctx, banklink.LinkTokenRequest{ClientUserID: "u1", AccessToken: it.AccessToken,
		AccountSelection: true, Platform: banklink.PlatformAndroid}); err != nil {
		t.Fatal(err)
	}
	reqs := srv.LinkTokenRequests()
	web, android := reqs[0], reqs[len(reqs)-1]
	if web["client_name"] != "Acme Pay" || web["language"] != "nl" || web["redirect_uri"] != "https://app.acme.test/plaid-oauth" {
		t.Fatalf("web link token request = %v", web)
	}
	if cc, _ := web["country_codes"].([]any); len(cc) != 2 || cc[1] != "NL" {
		t.Fatalf("country_codes = %v", web["country_codes"])
	}
	if _, ok := web["android_package_name"]; ok {
		t.Fatal("a web session sent android_package_name")
	}
	filters, _ := web["account_filters"].(map[string]any)
	dep, _ := filters["depository"].(map[string]any)
	if st, _ := dep["account_subtypes"].([]any); len(st) != 2 || st[0] != "checking" {
		t.Fatalf("account_filters = %v", web["account_filters"])
	}
	if android["android_package_name"] != "com.acme.pay" || android["redirect_uri"] != nil {
		t.Fatalf("android session = %v", android)
	}
	if upd, _ := android["update"].(map[string]any); upd["account_selection_enabled"] != true {
		t.Fatalf("update = %v", android["update"])
	}
	if _, ok := android["products"]; ok {
		t.Fatal("update mode sent products")
	}
}

func TestBadLinkSettingsAreRefusedAtConstruction(t *testing.T) {
	srv := newServer(t)
	for name, mutate := range map[string]func(*plaid.Options){
		"a client name over 30 characters":   func(o *plaid.Options) { o.ClientName = strings.Repeat("x", 31) },
		"a country Plaid does not serve":     func(o *plaid.Options) { o.CountryCodes = []string{"ZA"} },
		"a language Link does not speak":     func(o *plaid.Options) { o.Language = "af" },
		"a plain http redirect":              func(o *plaid.Options) { o.RedirectURI = "http://app.acme.test/cb" },
		"a redirect with a query":            func(o *plaid.Options) { o.RedirectURI = "https://app.acme.test/cb?x=1" },
		"an android package that is no name": func(o *plaid.Options) { o.AndroidPackageName = "acme pay" },
	} {
		t.Run(name, func(t *testing.T) {
			opts := plaid.Options{ClientID: srv.ClientID, Secret: srv.Secret, BaseURL: srv.URL}
			mutate(&opts)
			if _, err := plaid.New(opts); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestAnAppsOwnLinkSettingsTakeThePlaceOfTheProvidersForItsSessions(t *testing.T) {
	srv := newServer(t)
	p := newProvider(t, srv, func(o *plaid.Options) { o.ClientName, o.Language = "Default App", "en" })
	ctx := context.Background()
	if _, err := p.CreateLinkToken(ctx, banklink.LinkTokenRequest{ClientUserID: "u1", Products: []string{"auth"},
		Link: plaidlink.Settings{ClientName: "Merchant", Language: "nl", CountryCodes: []string{"NL"}, RedirectURI: "https://merchant.test/oauth"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.CreateLinkToken(ctx, banklink.LinkTokenRequest{ClientUserID: "u2", Products: []string{"auth"}}); err != nil {
		t.Fatal(err)
	}
	reqs := srv.LinkTokenRequests()
	app, other := reqs[0], reqs[1]
	if app["client_name"] != "Merchant" || app["language"] != "nl" || app["redirect_uri"] != "https://merchant.test/oauth" {
		t.Fatalf("the app's session = %v", app)
	}
	if cc, _ := app["country_codes"].([]any); len(cc) != 1 || cc[0] != "NL" {
		t.Fatalf("country_codes = %v", app["country_codes"])
	}
	if other["client_name"] != "Default App" || other["language"] != "en" {
		t.Fatalf("a session without app settings = %v", other)
	}
}

// Issue 14 point 2: Plaid's micro-deposit flows are turned on through the
// link token's auth options: both with auth alone, Automated only when
// auth comes with another product (Plaid allows Same Day with auth alone),
// none without auth or in update mode; and Plaid (plaidtest, as the spec
// and Plaid's rules say) takes each request.
func TestMicroDepositFlowsAreLinkTokenAuthOptions(t *testing.T) {
	srv := newServer(t)
	p := newProvider(t, srv, func(o *plaid.Options) { o.SameDayMicrodeposits, o.AutomatedMicrodeposits = true, true })
	ctx := context.Background()
	ex := link(t, srv, p, "ins_109508")
	it, _ := srv.Item(ex.ProviderItemID)
	for _, req := range []banklink.LinkTokenRequest{
		{ClientUserID: "u1", Products: []string{"auth"}},
		{ClientUserID: "u1", Products: []string{"auth", "transactions"}},
		{ClientUserID: "u1", Products: []string{"transactions"}},
		{ClientUserID: "u1", AccessToken: it.AccessToken},
	} {
		if _, err := p.CreateLinkToken(ctx, req); err != nil {
			t.Fatalf("%v: %v", req.Products, err)
		}
	}
	reqs := srv.LinkTokenRequests()
	reqs = reqs[len(reqs)-4:]
	want := []map[string]any{
		{"same_day_microdeposits_enabled": true, "automated_microdeposits_enabled": true},
		{"automated_microdeposits_enabled": true},
		nil, nil,
	}
	for i, r := range reqs {
		got, _ := r["auth"].(map[string]any)
		if len(got) != len(want[i]) {
			t.Fatalf("request %d auth = %v, want %v", i, got, want[i])
		}
		for k, v := range want[i] {
			if got[k] != v {
				t.Fatalf("request %d auth = %v, want %v", i, got, want[i])
			}
		}
	}
}
