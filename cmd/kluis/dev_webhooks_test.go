package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestDevShowsTheSandboxFiringPlaidsItemWebhooks walks, on kluis served as
// `kluis dev` serves it, the item webhooks `make dev`'s samples show (issue
// 14: the sandbox's webhooks in Plaid's shapes): Plaid's ITEM/ERROR with
// ITEM_LOGIN_REQUIRED breaks the item's login, LOGIN_REPAIRED mends it, and
// NEW_ACCOUNTS_AVAILABLE adds the account the sandbox now has.
func TestDevShowsTheSandboxFiringPlaidsItemWebhooks(t *testing.T) {
	var printed bytes.Buffer
	if err := samplesText.Execute(&printed, map[string]string{}); err != nil {
		t.Fatal(err)
	}
	bodies := []string{`{"code":"ERROR","error_code":"ITEM_LOGIN_REQUIRED"}`, `{"code":"LOGIN_REPAIRED"}`, `{"code":"NEW_ACCOUNTS_AVAILABLE"}`}
	for _, b := range bodies {
		if !strings.Contains(printed.String(), "-d '"+b+"'") {
			t.Fatalf("the samples do not show the webhook %s", b)
		}
	}
	call := serveForTest(t, "user_dev_item_webhooks")
	s := call("POST", "/v1/link/sessions", `{"products":["auth"]}`, 201)
	pub := call("POST", "/v1/sandbox/public-token", `{"link_session_id":"`+s["id"].(string)+
		`","institution_id":"ins_sandbox","username":"user_good","password":"pass_good"}`, 201)
	out := call("POST", "/v1/link/sessions/"+s["id"].(string)+"/exchange", `{"public_token":"`+pub["public_token"].(string)+`"}`, 201)
	item := out["item"].(map[string]any)["id"].(string)
	wantStatus := []string{"login_required", "active", "active"}
	for i, b := range bodies {
		res := call("POST", "/v1/sandbox/items/"+item+"/fire-webhook", b, 200)
		if res["outcome"] != "applied" {
			t.Fatalf("%s: %v, want applied", b, res)
		}
		if got := call("GET", "/v1/items/"+item, "", 200)["status"]; got != wantStatus[i] {
			t.Fatalf("after %s the item is %v, want %s", b, got, wantStatus[i])
		}
	}
	if n := len(call("GET", "/v1/items/"+item, "", 200)["accounts"].([]any)); n != 3 {
		t.Fatalf("after NEW_ACCOUNTS_AVAILABLE the item has %d accounts, want 3", n)
	}
}
