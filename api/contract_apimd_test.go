package api_test

// These tests read the contract (api/openapi.yaml and the docs it points
// at) line by line as an outside client would: the routes, the success
// statuses, the field names and JSON types of Item, Account and
// Verification, the error codes, Cache-Control: no-store and RFC 3339 UTC
// times. They decode into maps, not into kluis's own types, so
// that a renamed or retyped field fails here.

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api/apitest"
)

// answer is one response, decoded as a client would.
type answer struct {
	status int
	header http.Header
	body   string
	obj    map[string]any
}

// contractCall sends a request with a JSON body (if any) and checks what
// The contract says of every answer: JSON, no-store, times in UTC.
func contractCall(t *testing.T, c *http.Client, method, url, token, body string, extra ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("%s %s: Cache-Control = %q, want no-store", method, url, got)
	}
	if a.status == http.StatusNoContent {
		return a
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%s %s: Content-Type = %q, want JSON", method, url, ct)
	}
	if err := json.Unmarshal([]byte(a.body), &a.obj); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %s", method, url, a.body)
	}
	checkTimesUTC(t, a.obj, "")
	return a
}

// checkTimesUTC fails on any field named like a time (…_at) that is not an
// RFC 3339 time in UTC: Z, or +00:00 as Postgres writes the rows of an export.
func checkTimesUTC(t *testing.T, v any, name string) {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			checkTimesUTC(t, x, k)
		}
	case []any:
		for _, x := range v {
			checkTimesUTC(t, x, name)
		}
	case string:
		if !strings.HasSuffix(name, "_at") {
			return
		}
		if _, err := time.Parse(time.RFC3339Nano, v); err != nil || !(strings.HasSuffix(v, "Z") || strings.HasSuffix(v, "+00:00")) {
			t.Errorf("%s = %q, want an RFC 3339 time in UTC", name, v)
		}
	}
}

// expect fails unless the answer has the status.
func (a answer) expect(t *testing.T, status int) answer {
	t.Helper()
	if a.status != status {
		t.Fatalf("status = %d, want %d: %s", a.status, status, a.body)
	}
	return a
}

// expectError fails unless the answer is the error shape with status and code.
func (a answer) expectError(t *testing.T, status int, code string) map[string]any {
	t.Helper()
	a.expect(t, status)
	e, ok := a.obj["error"].(map[string]any)
	if !ok || e["code"] != code || e["message"] == "" || e["request_id"] == "" {
		t.Fatalf("error = %s, want code %q with message and request_id", a.body, code)
	}
	return e
}

// fields fails unless obj holds every field with the JSON type named:
// string, number, bool, object, array. A name ending in ? may be absent.
func fields(t *testing.T, what string, obj any, want map[string]string) map[string]any {
	t.Helper()
	m, ok := obj.(map[string]any)
	if !ok {
		t.Fatalf("%s = %v, want an object", what, obj)
	}
	for name, typ := range want {
		optional := strings.HasSuffix(name, "?")
		name = strings.TrimSuffix(name, "?")
		v, present := m[name]
		if !present {
			if !optional {
				t.Errorf("%s has no %q: %v", what, name, m)
			}
			continue
		}
		var got string
		switch v.(type) {
		case string:
			got = "string"
		case float64:
			got = "number"
		case bool:
			got = "bool"
		case map[string]any:
			got = "object"
		case []any:
			got = "array"
		default:
			got = "null"
		}
		if got != typ {
			t.Errorf("%s.%s is %s (%v), want %s", what, name, got, v, typ)
		}
	}
	return m
}

var (
	itemFields = map[string]string{"id": "string", "institution": "object", "status": "string", "created_at": "string", "accounts": "array"}
	// item_id is absent on manual accounts.
	accountFields      = map[string]string{"id": "string", "item_id?": "string", "name": "string", "mask": "string", "type": "string", "subtype": "string", "verification_status": "string"}
	verificationFields = map[string]string{"id": "string", "account_id": "string", "method": "string", "status": "string", "attempts_remaining": "number", "expires_at": "string"}
)

func checkItem(t *testing.T, obj any) map[string]any {
	t.Helper()
	it := fields(t, "item", obj, itemFields)
	fields(t, "item.institution", it["institution"], map[string]string{"id": "string", "name": "string"})
	accs, _ := it["accounts"].([]any)
	if len(accs) == 0 {
		t.Fatalf("item without accounts: %v", it)
	}
	for _, a := range accs {
		acc := checkAccount(t, a)
		if acc["item_id"] != it["id"] {
			t.Errorf("account item_id = %v, want %v", acc["item_id"], it["id"])
		}
	}
	return it
}

func checkAccount(t *testing.T, obj any) map[string]any {
	t.Helper()
	a := fields(t, "account", obj, accountFields)
	if mask, _ := a["mask"].(string); len(mask) != 4 || strings.Trim(mask, "0123456789") != "" {
		t.Errorf("mask = %q, want the last 4 digits", mask)
	}
	return a
}

func TestAPIMDPublicRoutesAnswerAsTheContractSays(t *testing.T) {
	ve := startVerify(t)
	pub := func(method, path, tok, body string, extra ...string) answer {
		t.Helper()
		return contractCall(t, nil, method, ve.Public.URL+path, tok, body, extra...)
	}
	tok := userToken(t, "user_apimd_1")

	contractCall(t, nil, "GET", ve.Public.URL+"/healthz", "", "").expect(t, 200)
	contractCall(t, nil, "GET", ve.Public.URL+"/readyz", "", "").expect(t, 200)
	pub("GET", "/v1/items", "", "").expectError(t, 401, "unauthenticated")

	// Link: session, sandbox public token, exchange (201, then 200 with the same item).
	s := pub("POST", "/v1/link/sessions", tok, `{"products":["auth"]}`).expect(t, 201)
	fields(t, "link session", s.obj, map[string]string{"id": "string", "link_token": "string", "status": "string", "expires_at": "string"})
	if id, _ := s.obj["id"].(string); !strings.HasPrefix(id, "lks_") || s.obj["status"] != "created" {
		t.Fatalf("link session = %s", s.body)
	}
	sid := s.obj["id"].(string)
	bad := pub("POST", "/v1/sandbox/public-token", tok, `{"link_session_id":"`+sid+`","institution_id":"ins_sandbox","username":"user_good","password":"wrong"}`)
	bad.expectError(t, 422, "invalid_credentials")
	pt := pub("POST", "/v1/sandbox/public-token", tok, `{"link_session_id":"`+sid+`","institution_id":"ins_sandbox","username":"user_good","password":"pass_good"}`).expect(t, 201)
	fields(t, "public token", pt.obj, map[string]string{"public_token": "string"})
	exchange := `{"public_token":"` + pt.obj["public_token"].(string) + `"}`
	first := pub("POST", "/v1/link/sessions/"+sid+"/exchange", tok, exchange).expect(t, 201)
	item := checkItem(t, first.obj["item"])
	again := pub("POST", "/v1/link/sessions/"+sid+"/exchange", tok, exchange).expect(t, 200)
	if again2 := checkItem(t, again.obj["item"]); again2["id"] != item["id"] {
		t.Fatalf("the exchange again gave item %v, want %v", again2["id"], item["id"])
	}
	itemID := item["id"].(string)
	for _, a := range item["accounts"].([]any) {
		if a.(map[string]any)["verification_status"] != "unverified" {
			t.Fatalf("a linked account does not start unverified: %v", a)
		}
	}

	list := pub("GET", "/v1/items", tok, "").expect(t, 200)
	items, _ := list.obj["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("items = %s", list.body)
	}
	checkItem(t, items[0])
	checkItem(t, pub("GET", "/v1/items/"+itemID, tok, "").expect(t, 200).obj)

	// Manual entry: 201 Account, unverified, no item.
	manual := pub("POST", "/v1/accounts", tok, manualBody("000123456789", goodRouting)).expect(t, 201)
	m := checkAccount(t, manual.obj)
	if m["verification_status"] != "unverified" || m["mask"] != "6789" {
		t.Fatalf("manual account = %s", manual.body)
	}
	if _, has := m["item_id"]; has && m["item_id"] != nil {
		t.Fatalf("a manual account names an item: %s", manual.body)
	}
	manualID := m["id"].(string)
	accs := pub("GET", "/v1/accounts", tok, "").expect(t, 200)
	if all, _ := accs.obj["accounts"].([]any); len(all) != len(item["accounts"].([]any))+1 {
		t.Fatalf("accounts = %s, want the linked and the manual ones", accs.body)
	}
	checkAccount(t, pub("GET", "/v1/accounts/"+manualID, tok, "").expect(t, 200).obj)

	// Verification by micro-deposits: 201, GET, deposits, a wrong answer, the right one.
	v := pub("POST", "/v1/accounts/"+manualID+"/verifications", tok, `{"method":"auto"}`).expect(t, 201)
	fields(t, "verification", v.obj, verificationFields)
	vid := v.obj["id"].(string)
	if v.obj["account_id"] != manualID || v.obj["method"] != "micro_deposits" {
		t.Fatalf("auto on a manual account = %s, want micro_deposits", v.body)
	}
	fields(t, "verification", pub("GET", "/v1/verifications/"+vid, tok, "").expect(t, 200).obj, verificationFields)
	dep := pub("GET", "/v1/sandbox/verifications/"+vid+"/deposits", tok, "").expect(t, 200)
	amounts, _ := dep.obj["amounts"].([]any)
	if len(amounts) != 2 {
		t.Fatalf("deposits = %s", dep.body)
	}
	right := []int{int(amounts[0].(float64)), int(amounts[1].(float64))}
	e := pub("POST", "/v1/verifications/"+vid+"/confirm", tok, wrongAmounts(right)).expectError(t, 422, "verification_mismatch")
	if n, ok := e["attempts_remaining"].(float64); !ok || n != 2 {
		t.Fatalf("mismatch = %v, want attempts_remaining 2", e)
	}
	ok := pub("POST", "/v1/verifications/"+vid+"/confirm", tok, amountsBody(right[0], right[1])).expect(t, 200)
	fields(t, "verification", ok.obj, verificationFields)
	if ok.obj["status"] != "verified" {
		t.Fatalf("confirm = %s, want verified", ok.body)
	}
	pub("POST", "/v1/verifications/"+vid+"/confirm", tok, amountsBody(right[0], right[1])).expectError(t, 409, "conflict")

	// Instant on a linked account of ins_sandbox.
	linked := item["accounts"].([]any)[0].(map[string]any)["id"].(string)
	inst := pub("POST", "/v1/accounts/"+linked+"/verifications", tok, `{"method":"auto"}`).expect(t, 201)
	fields(t, "verification", inst.obj, verificationFields)
	if inst.obj["method"] != "instant" || inst.obj["status"] != "verified" {
		t.Fatalf("auto on ins_sandbox = %s, want instant and verified", inst.body)
	}

	// Errors of the request itself.
	pub("POST", "/v1/accounts", tok, `{"bogus":1}`).expectError(t, 400, "invalid_request")
	pub("POST", "/v1/accounts", tok, manualBody("55667788", goodRouting), "Content-Type", "text/plain").expectError(t, 415, "unsupported_media_type")
	pub("POST", "/v1/accounts", tok, `{"a":"`+strings.Repeat("x", 1<<20)+`"}`).expectError(t, 413, "too_large")
	pub("GET", "/v1/items/itm_unknown", tok, "").expectError(t, 404, "not_found")

	// DELETE: 204, then gone.
	pub("DELETE", "/v1/items/"+itemID, tok, "").expect(t, 204)
	pub("GET", "/v1/items/"+itemID, tok, "").expectError(t, 404, "not_found")
}

func TestAPIMDAnIdempotencyKeyReplaysTheFirstAnswer(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_apimd_2")
	post := func(body string) answer {
		t.Helper()
		return contractCall(t, nil, "POST", ve.Public.URL+"/v1/accounts", tok, body, "Idempotency-Key", "apimd-key-1")
	}
	first := post(manualBody("11223344", goodRouting)).expect(t, 201)
	replay := post(manualBody("11223344", goodRouting)).expect(t, 201)
	if replay.body != first.body {
		t.Fatalf("replay = %s, want the first answer %s", replay.body, first.body)
	}
	post(manualBody("11223355", goodRouting)).expectError(t, 422, "idempotency_key_reused")
	// Another user's same key is another key.
	other := contractCall(t, nil, "POST", ve.Public.URL+"/v1/accounts", userToken(t, "user_apimd_3"),
		manualBody("11223344", goodRouting), "Idempotency-Key", "apimd-key-1").expect(t, 201)
	if other.obj["id"] == first.obj["id"] {
		t.Fatal("a key is not scoped to its caller")
	}
}

func TestAPIMDInternalItemsAccountsAndReveal(t *testing.T) {
	// Bank linking and verification (which takes manual entry), over the sandbox.
	be := &bankEnv{Env: startVerify(t).Env}
	tok := userToken(t, "user_apimd_4")
	it := be.linkSandbox(t, tok, "ins_sandbox")
	payments := be.ServiceClient(t, "payments")
	in := func(method, path, body string) answer {
		t.Helper()
		return contractCall(t, payments, method, be.Internal.URL+path, "", body)
	}

	item := in("GET", "/internal/v1/items/"+it.ID, "").expect(t, 200)
	checkItem(t, item.obj)
	fields(t, "internal item", item.obj, map[string]string{"credential_ref": "string"})
	acc := item.obj["accounts"].([]any)[0]
	fields(t, "internal item account", acc, map[string]string{"account_number_ref": "string"})
	accID := acc.(map[string]any)["id"].(string)
	a := in("GET", "/internal/v1/accounts/"+accID, "").expect(t, 200)
	checkAccount(t, a.obj)
	fields(t, "internal account", a.obj, map[string]string{"account_number_ref": "string"})

	tokenRef := item.obj["credential_ref"].(string)
	r := in("POST", "/internal/v1/credentials/"+tokenRef+"/reveal", `{"purpose":"payment_initiation"}`).expect(t, 200)
	fields(t, "reveal", r.obj, map[string]string{"ref": "string", "kind": "string", "secret": "object"})
	if r.obj["ref"] != tokenRef || r.obj["kind"] != "bank_access_token" {
		t.Fatalf("reveal = %v", r.obj["kind"])
	}
	fields(t, "bank_access_token", r.obj["secret"], map[string]string{"access_token": "string", "provider": "string"})
	numberRef := a.obj["account_number_ref"].(string)
	r = in("POST", "/internal/v1/credentials/"+numberRef+"/reveal", `{"purpose":"balance_check"}`).expect(t, 200)
	if r.obj["kind"] != "account_number" {
		t.Fatalf("reveal kind = %v", r.obj["kind"])
	}
	fields(t, "account_number", r.obj["secret"], map[string]string{"account_number": "string", "routing_number": "string"})
	in("POST", "/internal/v1/credentials/"+numberRef+"/reveal", `{"purpose":"statement"}`).expectError(t, 403, "forbidden")
	in("POST", "/internal/v1/credentials/cred_unknown/reveal", `{"purpose":"balance_check"}`).expectError(t, 404, "not_found")

	if status, _, body := apitest.Do(t, payments, "GET", be.Internal.URL+"/metrics", "", "", ""); status != 200 || !strings.Contains(body, "# TYPE") {
		t.Fatalf("metrics = %d", status)
	}

	// A manual account has no item, and its number is revealed like a linked one's.
	manual := contractCall(t, nil, "POST", be.Public.URL+"/v1/accounts", tok, manualBody("000123456789", goodRouting)).expect(t, 201)
	ma := in("GET", "/internal/v1/accounts/"+manual.obj["id"].(string), "").expect(t, 200)
	checkAccount(t, ma.obj)
	fields(t, "internal manual account", ma.obj, map[string]string{"account_number_ref": "string"})
	r = in("POST", "/internal/v1/credentials/"+ma.obj["account_number_ref"].(string)+"/reveal", `{"purpose":"balance_check"}`).expect(t, 200)
	if sec := fields(t, "account_number", r.obj["secret"], map[string]string{"account_number": "string", "routing_number": "string"}); sec["account_number"] != "000123456789" || sec["routing_number"] != goodRouting {
		t.Fatal("the manual account's number did not reveal as entered")
	}

	// DELETE the item: its credential is destroyed, so reveal is 404.
	contractCall(t, nil, "DELETE", be.Public.URL+"/v1/items/"+it.ID, tok, "").expect(t, 204)
	in("POST", "/internal/v1/credentials/"+tokenRef+"/reveal", `{"purpose":"payment_initiation"}`).expectError(t, 404, "not_found")
	in("GET", "/internal/v1/items/"+it.ID, "").expectError(t, 404, "not_found")
}

func TestAPIMDSandboxRoutesAreAbsentWithAnotherProvider(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_apimd_5")
	contractCall(t, nil, "POST", be.Public.URL+"/v1/sandbox/public-token", tok,
		`{"link_session_id":"lks_x","institution_id":"ins_sandbox","username":"user_good","password":"pass_good"}`).expectError(t, 404, "not_found")
	contractCall(t, nil, "GET", be.Public.URL+"/v1/sandbox/verifications/ver_x/deposits", tok, "").expectError(t, 404, "not_found")
}

func TestAPIMDComplianceRoutesAnswerAsTheContractSays(t *testing.T) {
	ce := startCompliance(t)
	makeSubjectData(t, ce.Env, "user_apimd_6")
	staffA, staffB := staff(t, "staff_apimd_a"), staff(t, "staff_apimd_b")
	comp := func(method, path, tok, body string) answer {
		t.Helper()
		return contractCall(t, ce.console, method, ce.Internal.URL+"/compliance/v1"+path, tok, body)
	}

	hold := comp("POST", "/legal-holds", staffA, `{"subject_id":"user_apimd_6","reason":"CASE-1"}`).expect(t, 201)
	fields(t, "legal hold", hold.obj, map[string]string{"id": "string"})
	era := comp("POST", "/erasure-requests", staffA, `{"subject_id":"user_apimd_6","reason":"TICKET-1"}`).expect(t, 201)
	fields(t, "erasure request", era.obj, map[string]string{"id": "string", "status": "string"})
	eid := era.obj["id"].(string)
	if !strings.HasPrefix(eid, "era_") || era.obj["status"] != "pending_approval" {
		t.Fatalf("erasure request = %s", era.body)
	}
	comp("POST", "/erasure-requests/"+eid+"/approve", staffA, "").expectError(t, 403, "forbidden")
	comp("POST", "/erasure-requests/"+eid+"/approve", staffB, "").expectError(t, 409, "legal_hold")
	comp("DELETE", "/legal-holds/"+hold.obj["id"].(string), staffA, "").expect(t, 204)
	done := comp("POST", "/erasure-requests/"+eid+"/approve", staffB, "").expect(t, 200)
	fields(t, "approved erasure", done.obj, map[string]string{"status": "string", "receipt": "object"})
	if done.obj["status"] != "completed" {
		t.Fatalf("approve = %s, want completed", done.body)
	}
	got := comp("GET", "/erasure-requests/"+eid, staffA, "").expect(t, 200)
	fields(t, "erasure request", got.obj, map[string]string{"status": "string", "receipt": "object"})

	v := comp("POST", "/audit/verify", staffA, "").expect(t, 200)
	fields(t, "audit verify", v.obj, map[string]string{"ok": "bool", "entries": "number", "first_bad_seq?": "number"})
	if v.obj["ok"] != true {
		t.Fatalf("audit verify = %s", v.body)
	}
	comp("GET", "/subjects/user_apimd_6/export", staffA, "").expectError(t, 404, "not_found")
}

func TestAPIMDASubjectExportGivesTimesInUTC(t *testing.T) {
	ce := startCompliance(t)
	makeSubjectData(t, ce.Env, "user_apimd_7")
	ex := contractCall(t, ce.console, "GET", ce.Internal.URL+"/compliance/v1/subjects/user_apimd_7/export", staff(t, "staff_apimd_c"), "").expect(t, 200)
	if _, ok := ex.obj["records"].(map[string]any); !ok {
		t.Fatalf("export = %s", ex.body)
	}
}
