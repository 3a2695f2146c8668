package main

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault/localkek"
)

// TestTheWiringBuildsEveryConfiguredBankProvider builds kluis from
// KLUIS_BANK_PROVIDERS=plaid,sandbox as serve does: both providers in the
// registry in that order (Plaid the default), a breaker for Plaid only, and
// the sandbox rail for the sandbox's accounts (its routes exist).
func TestTheWiringBuildsEveryConfiguredBankProvider(t *testing.T) {
	dir := t.TempDir()
	kek := filepath.Join(dir, "kek.b64")
	if err := localkek.Generate(kek); err != nil {
		t.Fatal(err)
	}
	srv := plaidtest.NewServer(t)
	env := map[string]string{
		"KLUIS_DATABASE_URL": pgtest.New(t), "KLUIS_LOCAL_KEK_FILE": kek,
		"KLUIS_JWT_JWKS_FILE": jwttest.WriteJWKS(t, jwttest.DefaultKeys()...), "KLUIS_JWT_ISSUER": jwttest.Issuer,
		"KLUIS_BANK_PROVIDERS": "plaid,sandbox", "PLAID_CLIENT_ID": srv.ClientID, "PLAID_SECRET": srv.Secret,
		"PLAID_BASE_URL": srv.URL, "KLUIS_BANK_WEBHOOK_URL": "https://kluis.example/webhooks/{provider}",
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	logger, _ := newLogger(cfg, io.Discard)
	a, err := build(context.Background(), cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	bank := a.bank
	if got := strings.Join(bank.ProviderNames(), ","); got != "plaid,sandbox" || !bank.Sandbox() {
		t.Fatalf("providers = %s (sandbox routes: %v)", got, bank.Sandbox())
	}
	if len(a.bankBreaker) != 1 || a.bankBreaker[0].Name() != "plaid" {
		t.Fatalf("breakers = %d, want one, Plaid's", len(a.bankBreaker))
	}
	if a.verify.Sandbox() == nil {
		t.Fatal("no sandbox rail with the sandbox among the providers")
	}
}
