package main

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink/stitch/stitchtest"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/localkek"
	"github.com/kluis-dev/kluis/verification"
)

// buildWith builds kluis as serve does, from a development environment
// (local root key, test JWKS, a fresh database) plus extra; closed at t's end.
func buildWith(t *testing.T, extra map[string]string) *app {
	t.Helper()
	kek := filepath.Join(t.TempDir(), "kek.b64")
	if err := localkek.Generate(kek); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"KLUIS_DATABASE_URL": pgtest.New(t), "KLUIS_LOCAL_KEK_FILE": kek,
		"KLUIS_JWT_JWKS_FILE": jwttest.WriteJWKS(t, jwttest.DefaultKeys()...), "KLUIS_JWT_ISSUER": jwttest.Issuer,
	}
	for k, v := range extra {
		env[k] = v
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
	t.Cleanup(a.close)
	return a
}

// TestTheWiringBuildsStitchBehindItsBreaker builds kluis from
// KLUIS_BANK_PROVIDERS=stitch,sandbox: Stitch is the default, behind a
// breaker, and its link token (through the breaker) is the authorize URL of
// the session, the same AuthorizeURL gives.
func TestTheWiringBuildsStitchBehindItsBreaker(t *testing.T) {
	srv := stitchtest.NewServer(t)
	a := buildWith(t, map[string]string{
		"KLUIS_BANK_PROVIDERS": "stitch,sandbox", "STITCH_CLIENT_ID": stitchtest.ClientID,
		"STITCH_CLIENT_SECRET": stitchtest.ClientSecret, "STITCH_BASE_URL": srv.URL, "STITCH_AUTH_URL": srv.URL,
		"KLUIS_STITCH_REDIRECT_URI": "https://kluis.example/link/callback/stitch", "STITCH_WEBHOOK_SECRET": stitchtest.WebhookSecret,
	})
	bank := a.bank
	if got := strings.Join(bank.ProviderNames(), ","); got != "stitch,sandbox" || len(a.bankBreaker) != 1 {
		t.Fatalf("providers = %s, %d breakers", got, len(a.bankBreaker))
	}
	s, err := bank.CreateLinkSession(context.Background(), audit.User("user_wiring", ""), []string{"auth"}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.LinkToken, srv.URL+"/connect/authorize?") {
		t.Fatal("the link token is not Stitch's authorize URL")
	}
	got, err := bank.AuthorizeURL(context.Background(), s.ID)
	if err != nil || got != s.LinkToken {
		t.Fatalf("AuthorizeURL = %v; want the session's link token", err)
	}
	if _, err := srv.Authorize(got); err != nil {
		t.Fatalf("Stitch refuses the authorize URL: %v", err)
	}
}

// TestTheDevSetupVerifiesASouthAfricanManualAccountByTheBank builds kluis as
// `kluis dev` does (the sandbox provider) and takes the samples' South
// African account through bank account verification: the sandbox's
// verifier is wired, and an account ending in 0001 is verified.
func TestTheDevSetupVerifiesASouthAfricanManualAccountByTheBank(t *testing.T) {
	a := buildWith(t, nil)
	svc := a.verify
	ctx := context.Background()
	actor := audit.User("user_dev_1", "")
	if _, err := vault.EnsureSubject(ctx, a.db.Pool, actor.Name); err != nil {
		t.Fatal(err)
	}
	acct, err := svc.CreateManualAccount(ctx, actor, verification.ManualAccount{Country: "ZA", BankID: "za_capitec",
		AccountNumber: "1479260001", AccountType: "savings", HolderName: "Dev User", HolderIDNumber: "8001015009087"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := svc.Start(ctx, actor, acct.ID, verification.MethodBankAccountVerification)
	if err != nil || v.Status != verification.StatusVerified || v.Rail != "sandbox" {
		t.Fatalf("bank verification: %+v %v", v, err)
	}
}
