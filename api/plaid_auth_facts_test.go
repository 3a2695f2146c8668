package api_test

import (
	"testing"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
	"github.com/kluis-dev/kluis/verification/sandboxrail"
)

// startPlaidVerify is kluis over the Plaid adapter and an in-test Plaid,
// with verification on the sandbox rail.
func startPlaidVerify(t *testing.T) (*bankEnv, *verifyEnv) {
	t.Helper()
	be := &bankEnv{plaid: plaidtest.NewServer(t, plaidtest.WithSpec(plaidtest.LoadSpec(t)))}
	ve := &verifyEnv{clock: &testClock{}}
	be.Env = apitest.Start(t, func(d *api.Deps) {
		keys := d.Pseudonyms.(*vault.SystemKeys)
		p, err := plaid.New(plaid.Options{ClientID: be.plaid.ClientID, Secret: be.plaid.Secret, BaseURL: be.plaid.URL, MaxRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := banklink.New(banklink.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Provider: p, Keys: keys, Logger: d.Logger})
		if err != nil {
			t.Fatal(err)
		}
		be.svc, d.BankLink = svc, svc
		ve.rail = sandboxrail.New(d.DB, keys, 0, ve.clock)
		ve.svc, err = verification.New(verification.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Accounts: banklink.NewAccountStore(d.DB), Keys: keys, Rail: ve.rail,
			Clock: ve.clock, Logger: d.Logger})
		if err != nil {
			t.Fatal(err)
		}
		d.Verification = ve.svc
	})
	ve.Env = be.Env
	return be, ve
}

// Issue 14 point 5: Auth's verification_status decides whether instant
// verification proves the account, and a tokenized number is revealed as
// such.
func TestPlaidsVerificationStatusDecidesAndTokenizedNumbersAreRevealedAsSuch(t *testing.T) {
	be, ve := startPlaidVerify(t)
	tok := userToken(t, "user_plaid_auth_facts")
	for _, inst := range []plaidtest.Institution{
		{ID: "ins_pending", Name: "Pending Micro-deposits Bank", Auth: true, VerificationStatus: "pending_manual_verification"},
		{ID: "ins_database", Name: "Database Match Bank", Auth: true, VerificationStatus: "database_matched"},
		{ID: "ins_verified", Name: "Micro-deposits Done Bank", Auth: true, VerificationStatus: "automatically_verified"},
		{ID: "ins_tokenized", Name: "Tokenizing Bank", Auth: true, Tokenized: true},
	} {
		be.plaid.AddInstitution(inst)
	}

	for _, inst := range []string{"ins_pending", "ins_database"} {
		it := be.linkPlaid(t, tok, inst)
		status, body := ve.call(t, "POST", "/v1/accounts/"+it.Accounts[0].ID+"/verifications", tok, `{"method":"instant"}`)
		mustError(t, status, body, 422, verification.CodeInstantUnsupported)
	}
	for _, inst := range []string{"ins_verified", "ins_tokenized", plaidtest.InstitutionAuth} {
		it := be.linkPlaid(t, tok, inst)
		if v := ve.start(t, tok, it.Accounts[0].ID, "instant", 201); v.Status != "verified" {
			t.Fatalf("%s: %+v", inst, v)
		}
	}

	tokenized := be.linkPlaid(t, tok, "ins_tokenized")
	plain := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	client := be.ServiceClient(t, "payments")
	for _, tc := range []struct {
		item itemBody
		want bool
	}{{tokenized, true}, {plain, false}} {
		status, _, body := apitest.Do(t, client, "GET", be.Internal.URL+"/internal/v1/accounts/"+tc.item.Accounts[0].ID, "", "", "")
		var acct accountBody
		want(t, status, 200, body, &acct)
		if acct.AccountNumberRef == nil {
			t.Fatalf("%s: no number sealed", tc.item.Institution.ID)
		}
		status, _, body = apitest.Do(t, client, "POST", revealURL(be.Env, *acct.AccountNumberRef), "", "application/json", `{"purpose":"payment_initiation"}`)
		var out struct {
			Secret map[string]any `json:"secret"`
		}
		want(t, status, 200, body, &out)
		got, present := out.Secret["tokenized"]
		if tc.want && got != true || !tc.want && present {
			t.Fatalf("%s: secret tokenized = %v (present %v)", tc.item.Institution.ID, got, present)
		}
	}
}
