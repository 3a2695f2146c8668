package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// TestTheDevExampleAppOffersKluissProvidersAndLinksThroughTheChosenOne
// runs kluis as `kluis dev` configures it, with the operator's
// KLUIS_BANK_PROVIDERS=sandbox,plaid over the development settings, and the
// example app as `kluis dev` serves it: the page offers both providers, and
// a link session the app's backend creates is at the provider the user
// chose (the default when none or an unknown one is chosen), with a hosted
// page to open.
func TestTheDevExampleAppOffersKluissProvidersAndLinksThroughTheChosenOne(t *testing.T) {
	dir := t.TempDir()
	env, signer, err := devFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := plaidtest.NewServer(t)
	operator := map[string]string{
		"KLUIS_DATABASE_URL": pgtest.New(t), "KLUIS_PUBLIC_ADDR": "127.0.0.1:0", "KLUIS_INTERNAL_ADDR": "127.0.0.1:0",
		"KLUIS_LOG_LEVEL": "error", "KLUIS_ENV": "production", // KLUIS_ENV is dev's own
		"KLUIS_BANK_PROVIDERS": "sandbox,plaid", "PLAID_CLIENT_ID": srv.ClientID, "PLAID_SECRET": srv.Secret,
		"PLAID_BASE_URL": srv.URL,
	}
	cfg, err := config.Load(devLookup(func(k string) string { return operator[k] }, env))
	if err != nil {
		t.Fatalf("kluis dev with KLUIS_BANK_PROVIDERS set: %v", err)
	}
	if got := strings.Join(cfg.BankProviders, ","); got != "sandbox,plaid" || cfg.Production() {
		t.Fatalf("providers %q, production %v", got, cfg.Production())
	}
	ctx, stop := context.WithCancel(context.Background())
	logger, _ := newLogger(cfg, io.Discard)
	a, err := build(ctx, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.close)
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, ready) }()
	var public string
	select {
	case addrs := <-ready:
		public = addrs[0]
	case err := <-done:
		t.Fatalf("serve stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not listen")
	}
	t.Cleanup(func() { stop(); <-done })
	kluisURL := "http://" + public
	token := devUserToken(signer)
	app := httptest.NewServer(devApp(kluisURL, cfg.BankProviders, token))
	t.Cleanup(app.Close)

	resp, err := http.Get(app.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, p := range []string{"sandbox", "plaid"} {
		if !strings.Contains(string(page), `<option value="`+p+`">`) {
			t.Fatalf("the example app's page offers no %s:\n%s", p, page)
		}
	}

	for _, tc := range []struct{ chosen, want string }{
		{"plaid", "plaid"}, {"sandbox", "sandbox"}, {"", "sandbox"}, {"stitch", "sandbox"},
	} {
		resp, err := http.Post(app.URL+"/api/link-session", "application/json", strings.NewReader(`{"provider":"`+tc.chosen+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		var s struct {
			ID            string `json:"id"`
			HostedLinkURL string `json:"hosted_link_url"`
			Error         string `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		if resp.StatusCode != 200 || s.ID == "" || !strings.Contains(s.HostedLinkURL, "/link/"+s.ID+"?token=") {
			t.Fatalf("chose %q: %d %+v", tc.chosen, resp.StatusCode, s)
		}
		req, _ := http.NewRequest("GET", kluisURL+"/v1/link/sessions/"+s.ID, nil)
		tok, _ := token()
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Provider string `json:"provider"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if got.Provider != tc.want {
			t.Errorf("chose %q: the session is at %q, want %q", tc.chosen, got.Provider, tc.want)
		}
	}
}

// TestDevLookupLetsTheOperatorListBankProviders: the development
// KLUIS_BANK_PROVIDER gives way to the operator's KLUIS_BANK_PROVIDERS (or
// their own KLUIS_BANK_PROVIDER), and KLUIS_ENV stays dev's own.
func TestDevLookupLetsTheOperatorListBankProviders(t *testing.T) {
	env := map[string]string{"KLUIS_BANK_PROVIDER": "sandbox", "KLUIS_ENV": "development"}
	for _, tc := range []struct {
		operator       map[string]string
		single, listed string
	}{
		{map[string]string{}, "sandbox", ""},
		{map[string]string{"KLUIS_BANK_PROVIDERS": "sandbox,stitch"}, "", "sandbox,stitch"},
		{map[string]string{"KLUIS_BANK_PROVIDER": "plaid"}, "plaid", ""},
	} {
		look := devLookup(func(k string) string { return tc.operator[k] }, env)
		if look("KLUIS_BANK_PROVIDER") != tc.single || look("KLUIS_BANK_PROVIDERS") != tc.listed {
			t.Errorf("%v: KLUIS_BANK_PROVIDER %q, KLUIS_BANK_PROVIDERS %q", tc.operator,
				look("KLUIS_BANK_PROVIDER"), look("KLUIS_BANK_PROVIDERS"))
		}
	}
	if look := devLookup(func(string) string { return "production" }, env); look("KLUIS_ENV") != "development" {
		t.Error("the operator's KLUIS_ENV replaced dev's")
	}
}
