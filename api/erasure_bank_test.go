package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/sandbox"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/vault"
)

// TestAnErasureRevokesTheSubjectsItemsAtTheProviderBeforeShredding links a
// sandbox item, erases its owner through the compliance API with bank
// linking as the revoker, and checks that the bank no longer honours the
// access token, the item is gone, and the other user's item still works.
func TestAnErasureRevokesTheSubjectsItemsAtTheProviderBeforeShredding(t *testing.T) {
	be := &bankEnv{}
	var comp *compliance.Service
	be.Env = apitest.Start(t, func(d *api.Deps) {
		sb, err := sandbox.New(sandbox.Options{DB: d.DB, Secret: sandboxSecret})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := banklink.New(banklink.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Provider: sb,
			Keys: d.Pseudonyms.(*vault.SystemKeys), Logger: d.Logger})
		if err != nil {
			t.Fatal(err)
		}
		be.sandbox, be.svc, d.BankLink = sb, svc, svc
		comp = compliance.NewService(d.DB, d.Auditor, nil, nil)
		comp.AddRevoker(svc)
		d.Compliance = comp
	})
	// The ring is made after the options run; erasure shreds through it.
	*comp = *compliance.NewService(be.DB, be.Deps.Auditor, be.Ring, nil)
	comp.AddRevoker(be.svc)

	gone, kept := userToken(t, "user_erased_with_items"), userToken(t, "user_kept_with_items")
	goneItem := be.linkSandbox(t, gone, "ins_sandbox")
	keptItem := be.linkSandbox(t, kept, "ins_sandbox")
	_, internal := be.internalItem(t, goneItem.ID)
	token := revealToken(t, be, internal.CredentialRef)
	// A stored idempotent answer of the subject's (a link session, with its
	// link token) must go with them too.
	req, _ := http.NewRequest("POST", be.Public.URL+"/v1/link/sessions", strings.NewReader(`{"products":["auth"]}`))
	req.Header.Set("Authorization", "Bearer "+gone)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "erase-me-too")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("idempotent link session: %v %v", resp, err)
	}
	resp.Body.Close()
	if n := countRows(t, be.Env, "idempotency_keys WHERE subject_id IS NOT NULL"); n != 1 {
		t.Fatalf("stored idempotent answers of the subject = %d, want 1", n)
	}

	console := be.ServiceClient(t, "compliance-console")
	status, _, body := apitest.Do(t, console, "POST", be.Internal.URL+"/compliance/v1/erasure-requests", staff(t, "staff_a"), "application/json",
		`{"subject_id":"user_erased_with_items","reason":"TICKET-9"}`)
	if status != 201 {
		t.Fatalf("request = %d %s", status, body)
	}
	era := decode[erasureBody](t, body)
	status, _, body = apitest.Do(t, console, "POST", be.Internal.URL+"/compliance/v1/erasure-requests/"+era.ID+"/approve", staff(t, "staff_b"), "", "")
	if status != 200 || !strings.Contains(body, `"completed"`) {
		t.Fatalf("approve = %d %s", status, body)
	}
	// The bank no longer honours the erased subject's token.
	if _, err := be.sandbox.GetAccounts(context.Background(), token); kluis.ErrorCode(err) != banklink.CodeInvalidToken {
		t.Fatalf("the erased subject's token still works at the bank: %v", err)
	}
	if status, _, _ := be.call(t, "GET", "/v1/items/"+goneItem.ID, gone, ""); status != 404 {
		t.Fatalf("the erased item answers %d", status)
	}
	if status, _, _ := be.call(t, "GET", "/v1/items/"+keptItem.ID, kept, ""); status != 200 {
		t.Fatalf("the other user's item answers %d", status)
	}
	if n := countRows(t, be.Env, "idempotency_keys"); n != 0 {
		t.Fatalf("%d stored idempotent answers outlived the erasure", n)
	}
	if n := rowsMentioning(t, be.Env, "user_erased_with_items"); len(n) != 0 {
		t.Fatalf("rows still name the erased subject: %v", n)
	}
}

func revealToken(t *testing.T, be *bankEnv, ref string) string {
	t.Helper()
	status, secret := be.reveal(t, be.ServiceClient(t, "payments"), ref)
	if status != 200 || secret["access_token"] == "" {
		t.Fatalf("reveal = %d", status)
	}
	return secret["access_token"]
}
