package main

import (
	"testing"
)

// TestDevShowsThePlaidMicroDepositFlowOnTheSandbox walks, on kluis built
// and served as `kluis dev` builds it (sandbox bank provider), what
// `make dev`'s samples show of Plaid's own micro-deposits (issue 14
// point 2): an account at ins_sandbox_same_day is verified by the code the
// user types in Link's update mode, and one at ins_sandbox_automated by the
// provider's AUTOMATICALLY_VERIFIED webhook, and Same Day ones by Plaid's
// SMS_MICRODEPOSITS_VERIFICATION webhook, each through kluis's one
// verification state machine.
func TestDevShowsThePlaidMicroDepositFlowOnTheSandbox(t *testing.T) {
	call := serveForTest(t, "user_dev_microdeposits")
	link := func(inst string) (string, string) {
		t.Helper()
		s := call("POST", "/v1/link/sessions", `{"products":["auth"]}`, 201)
		pub := call("POST", "/v1/sandbox/public-token", `{"link_session_id":"`+s["id"].(string)+
			`","institution_id":"`+inst+`","username":"user_good","password":"pass_good"}`, 201)
		item := call("POST", "/v1/link/sessions/"+s["id"].(string)+"/exchange", `{"public_token":"`+pub["public_token"].(string)+`"}`, 201)
		it := item["item"].(map[string]any)
		return it["id"].(string), it["accounts"].([]any)[0].(map[string]any)["id"].(string)
	}
	open := func(account string) string {
		t.Helper()
		conflict := call("POST", "/v1/accounts/"+account+"/verifications", `{"method":"auto"}`, 409)
		return conflict["error"].(map[string]any)["verification_id"].(string)
	}
	status := func(verification string) string {
		t.Helper()
		v := call("GET", "/v1/verifications/"+verification, "", 200)
		if v["provider_checked"] != true {
			t.Fatalf("not provider-checked: %v", v)
		}
		return v["status"].(string)
	}

	item, account := link("ins_sandbox_same_day")
	ver := open(account)
	if got := status(ver); got != "posted" {
		t.Fatalf("Same Day verification is %s, want posted", got)
	}
	call("POST", "/v1/verifications/"+ver+"/confirm", `{"code":"ABC"}`, 409)
	s := call("POST", "/v1/link/sessions", `{"products":["auth"],"item_id":"`+item+`"}`, 201)
	pub := call("POST", "/v1/sandbox/public-token", `{"link_session_id":"`+s["id"].(string)+
		`","username":"user_good","password":"pass_good","code":"ABC"}`, 201)
	call("POST", "/v1/link/sessions/"+s["id"].(string)+"/exchange", `{"public_token":"`+pub["public_token"].(string)+`"}`, 201)
	if got := status(ver); got != "verified" {
		t.Fatalf("after the code in update mode: %s, want verified", got)
	}
	if got := call("GET", "/v1/accounts/"+account, "", 200)["verification_status"]; got != "verified" {
		t.Fatalf("account is %v, want verified", got)
	}

	item, account = link("ins_sandbox_automated")
	ver = open(account)
	if got := status(ver); got != "sent" {
		t.Fatalf("Automated verification is %s, want sent", got)
	}
	call("POST", "/v1/sandbox/items/"+item+"/fire-webhook", `{"code":"AUTOMATICALLY_VERIFIED"}`, 200)
	if got := status(ver); got != "verified" {
		t.Fatalf("after AUTOMATICALLY_VERIFIED: %s, want verified", got)
	}
	call("POST", "/v1/sandbox/items/"+item+"/fire-webhook", `{"code":"AUTOMATICALLY_VERIFIED"}`, 409)

	// Same Day confirmed through Plaid's SMS flow instead of Link: the
	// sandbox fires Plaid's AUTH webhook with its status and account, and
	// kluis handles it as Plaid's.
	for _, tc := range []struct{ status, kind, want string }{
		{"", "auth_verified", "verified"}, {`,"status":"VERIFICATION_FAILED"`, "auth_failed", "failed"},
	} {
		item, account = link("ins_sandbox_same_day")
		ver = open(account)
		res := call("POST", "/v1/sandbox/items/"+item+"/fire-webhook", `{"code":"SMS_MICRODEPOSITS_VERIFICATION"`+tc.status+`}`, 200)
		if res["kind"] != tc.kind || res["outcome"] != "applied" {
			t.Fatalf("SMS_MICRODEPOSITS_VERIFICATION%s: %v", tc.status, res)
		}
		if got := status(ver); got != tc.want {
			t.Fatalf("after SMS_MICRODEPOSITS_VERIFICATION%s: %s, want %s", tc.status, got, tc.want)
		}
		call("POST", "/v1/sandbox/items/"+item+"/fire-webhook", `{"code":"SMS_MICRODEPOSITS_VERIFICATION"`+tc.status+`}`, 409)
	}
	call("POST", "/v1/sandbox/items/"+item+"/fire-webhook", `{"code":"LOGIN_REPAIRED","status":"MANUALLY_VERIFIED"}`, 400)
	// Plaid sends WEBHOOK_UPDATE_ACKNOWLEDGED only to a new URL: without
	// KLUIS_BANK_WEBHOOK_URL there is none to name.
	call("POST", "/v1/sandbox/items/"+item+"/fire-webhook", `{"code":"WEBHOOK_UPDATE_ACKNOWLEDGED"}`, 409)
}
