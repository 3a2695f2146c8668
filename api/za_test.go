package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/accountnumber"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
)

const (
	// canaryIDNumber is a valid South African ID number (Luhn digit
	// right) found nowhere else in the tests.
	canaryIDNumber = "9306155123088"
	// canaryZAAccount is a Capitec account number (10 digits).
	canaryZAAccount = "1479263580"
	// canaryPhone is a +27 mobile number in its usual spacing.
	canaryPhone = "+27 83 918 2746"
)

func zaBody(fields map[string]any) string {
	body := map[string]any{"country": "ZA", "bank_id": "za_capitec", "account_number": canaryZAAccount,
		"account_type": "savings", "holder_name": "Lindiwe Dube", "holder_id_number": canaryIDNumber}
	for k, v := range fields {
		if v == nil {
			delete(body, k)
		} else {
			body[k] = v
		}
	}
	b, _ := json.Marshal(body)
	return string(b)
}

// errorField returns error.field of an error body.
func errorField(t *testing.T, body string) string {
	t.Helper()
	var e struct {
		Error struct {
			Code  string `json:"code"`
			Field string `json:"field"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return e.Error.Field
}

func TestTheBanksOfSouthAfricaAreListed(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_za_banks")
	status, body := ve.call(t, "GET", "/v1/banks?country=ZA", tok, "")
	var out struct {
		Banks []struct {
			ID, Name            string
			UniversalBranchCode string `json:"universal_branch_code"`
		} `json:"banks"`
	}
	want(t, status, 200, body, &out)
	found := map[string]string{}
	for _, b := range out.Banks {
		found[b.ID] = b.UniversalBranchCode
	}
	if found["za_capitec"] != "470010" || found["za_standard_bank"] != "051001" || len(out.Banks) < 10 {
		t.Fatalf("banks = %s", body)
	}
	for _, q := range []string{"", "?country=US", "?country=za", "?country=XX", "?country=ZA%00"} {
		t.Run("country "+q, func(t *testing.T) {
			status, body := ve.call(t, "GET", "/v1/banks"+q, tok, "")
			mustError(t, status, body, 400, "invalid_request")
			if f := errorField(t, body); f != "country" {
				t.Fatalf("error.field = %q, want country", f)
			}
		})
	}
	status, body = ve.call(t, "GET", "/v1/banks?country=ZA", "", "")
	mustError(t, status, body, 401, "unauthenticated")
}

func TestSouthAfricanManualAccountInputIsChecked(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_za_input")
	bad := []struct {
		name   string
		fields map[string]any
		field  string
	}{
		{"an unknown country", map[string]any{"country": "NA"}, "country"},
		{"a lower-case country", map[string]any{"country": "za"}, "country"},
		{"an unknown bank", map[string]any{"bank_id": "za_nope"}, "bank_id"},
		{"no bank", map[string]any{"bank_id": nil}, "bank_id"},
		{"a five-digit branch code", map[string]any{"branch_code": "47001"}, "branch_code"},
		{"a branch code with a space", map[string]any{"branch_code": "470 010"}, "branch_code"},
		{"an account number too short for the bank", map[string]any{"account_number": "147926358"}, "account_number"},
		{"an account number too long for the bank", map[string]any{"account_number": "14792635801"}, "account_number"},
		{"an account number with a space", map[string]any{"account_number": "14792 63580"}, "account_number"},
		{"a phone number as the account number", map[string]any{"account_number": canaryPhone}, "account_number"},
		{"a US account type", map[string]any{"account_type": "checking"}, "account_type"},
		{"no holder name", map[string]any{"holder_name": nil}, "holder_name"},
		{"an ID number of 12 digits", map[string]any{"holder_id_number": canaryIDNumber[:12]}, "holder_id_number"},
		{"an ID number with a wrong check digit", map[string]any{"holder_id_number": "9306155123089"}, "holder_id_number"},
		{"an ID number with month 13", map[string]any{"holder_id_number": "9313155123085"}, "holder_id_number"},
		{"an ID number with citizenship digit 5", map[string]any{"holder_id_number": "9306155123583"}, "holder_id_number"},
		{"an ID number as a number", map[string]any{"holder_id_number": 9306155123088}, ""},
		{"a routing number on a South African account", map[string]any{"routing_number": goodRouting}, "routing_number"},
		{"an unknown field", map[string]any{"id_number": canaryIDNumber}, ""},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			status, body := ve.call(t, "POST", "/v1/accounts", tok, zaBody(tc.fields))
			mustError(t, status, body, 400, "invalid_request")
			if f := errorField(t, body); f != tc.field {
				t.Fatalf("error.field = %q, want %q: %s", f, tc.field, body)
			}
			if strings.Contains(body, canaryIDNumber[:6]) || strings.Contains(body, "1479263") || strings.Contains(body, "918 2746") {
				t.Fatalf("the error quotes the input: %s", body)
			}
		})
	}
	// The South African fields on a US account are refused too.
	status, body := ve.call(t, "POST", "/v1/accounts", tok,
		`{"account_number":"0001234567","routing_number":"021000021","account_type":"checking","holder_name":"A","holder_id_number":"`+canaryIDNumber+`"}`)
	mustError(t, status, body, 400, "invalid_request")
	if f := errorField(t, body); f != "holder_id_number" {
		t.Fatalf("error.field = %q", f)
	}

	status, body = ve.call(t, "POST", "/v1/accounts", tok, zaBody(nil))
	var a accountBody
	want(t, status, 201, body, &a)
	if a.Mask != canaryZAAccount[len(canaryZAAccount)-4:] || a.Subtype != "savings" {
		t.Fatalf("account = %s", body)
	}
	var country, bank string
	var holderRef *string
	if err := ve.DB.Pool.QueryRow(context.Background(), `SELECT country, bank_id, holder_id_ref FROM accounts WHERE id = $1`, a.ID).
		Scan(&country, &bank, &holderRef); err != nil {
		t.Fatal(err)
	}
	if country != "ZA" || bank != "za_capitec" || holderRef == nil {
		t.Fatalf("stored %s %s %v", country, bank, holderRef)
	}
	status, body = ve.call(t, "POST", "/v1/accounts", tok, zaBody(nil))
	mustError(t, status, body, 409, "conflict")
	// The same digits at another bank are another account; no ID number
	// is optional; a branch's own code is kept.
	status, body = ve.call(t, "POST", "/v1/accounts", tok, zaBody(map[string]any{"bank_id": "za_nedbank", "holder_id_number": nil,
		"branch_code": "198765", "account_type": "transmission"}))
	want(t, status, 201, body, &a)
	if a.Subtype != "transmission" || a.Name != "Transmission account" {
		t.Fatalf("account = %s", body)
	}
	// The US form is unchanged, country US or none.
	status, body = ve.call(t, "POST", "/v1/accounts", tok,
		`{"country":"US","account_number":"0001234567","routing_number":"021000021","account_type":"checking","holder_name":"A"}`)
	want(t, status, 201, body, nil)
}

// TestASouthAfricanCanaryNeverLeaves plants an ID number and a +27 phone
// number, makes requests that succeed and fail (400s naming the field,
// 409), reveals, and searches the answers, the logs, a dump of the database
// (audit log included) and every column of every table for them in the
// clear.
func TestASouthAfricanCanaryNeverLeaves(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_za_canary")
	var bodies []string
	do := func(method, path, body string) (int, string) {
		status, resp := ve.call(t, method, path, tok, body)
		bodies = append(bodies, resp)
		return status, resp
	}
	status, resp := do("POST", "/v1/accounts", zaBody(map[string]any{"holder_name": "Lindiwe Dube " + canaryPhone}))
	var a accountBody
	want(t, status, 201, resp, &a)
	do("POST", "/v1/accounts", zaBody(nil))                                           // 409
	do("POST", "/v1/accounts", zaBody(map[string]any{"branch_code": "4700"}))         // 400 branch_code
	do("POST", "/v1/accounts", zaBody(map[string]any{"account_number": canaryPhone})) // 400 account_number
	do("POST", "/v1/accounts", zaBody(map[string]any{"holder_id_number": canaryIDNumber + "0"}))
	do("POST", "/v1/accounts", zaBody(map[string]any{"phone": canaryPhone})) // 400 unknown field
	do("GET", "/v1/banks?country="+canaryIDNumber, "")
	do("GET", "/v1/accounts", "")
	do("GET", "/v1/accounts/"+a.ID, "")
	status, resp = do("POST", "/v1/accounts/"+a.ID+"/verifications", `{"method":"micro_deposits"}`)
	want(t, status, 201, resp, nil)

	var numberRef, idRef string
	if err := ve.DB.Pool.QueryRow(context.Background(), `SELECT account_number_ref, holder_id_ref FROM accounts WHERE id = $1`, a.ID).
		Scan(&numberRef, &idRef); err != nil {
		t.Fatal(err)
	}
	// A service allowed account numbers gets the South African shape; no
	// policy can name id_number, so its reference is refused.
	payments := ve.ServiceClient(t, "payments")
	status, _, resp = apitest.Do(t, payments, "POST", revealURL(ve.Env, numberRef), "", "application/json", `{"purpose":"payment_initiation"}`)
	var rv struct {
		Kind   string            `json:"kind"`
		Secret map[string]string `json:"secret"`
	}
	want(t, status, 200, resp, &rv)
	if rv.Kind != accountnumber.Kind || rv.Secret["account_number"] != canaryZAAccount || rv.Secret["branch_code"] != "470010" ||
		rv.Secret["bank_id"] != "za_capitec" || rv.Secret["routing_number"] != "" {
		t.Fatalf("reveal = %v", rv.Secret)
	}
	status, _, resp = apitest.Do(t, payments, "POST", revealURL(ve.Env, idRef), "", "application/json", `{"purpose":"payment_initiation"}`)
	mustError(t, status, resp, 403, "forbidden")
	bodies = append(bodies, resp)

	phoneDigits := strings.ReplaceAll(strings.TrimPrefix(canaryPhone, "+"), " ", "")
	secrets := []string{canaryIDNumber, canaryIDNumber[:6] + " " + canaryIDNumber[6:10], canaryPhone, phoneDigits, "83 918 2746", "Lindiwe"}
	for _, b := range bodies {
		for _, s := range secrets {
			if strings.Contains(b, s) {
				t.Fatalf("a response carries %q: %s", s, b)
			}
		}
	}
	logs := ve.Logs.String()
	dump := pgDump(t, ve.DBURL)
	for _, s := range append(secrets, canaryZAAccount) {
		if strings.Contains(logs, s) {
			t.Fatalf("the logs carry %q", s)
		}
		if strings.Contains(dump, s) {
			t.Fatalf("the database dump carries %q", s)
		}
		if found := rowsMentioning(t, ve.Env, s); len(found) > 0 {
			t.Fatalf("rows carry %q: %v", s, found)
		}
	}
	if n := ve.count(t, `SELECT count(*) FROM audit_entries WHERE action = 'account.created_manual' AND details->>'holder_id_ref' = $1`, idRef); n != 1 {
		t.Fatalf("the audit entry of the account names its ID reference %d times", n)
	}
}

// TestErasureAndExportTakeTheSealedIDNumber: the export of a subject with a
// South African account shows the id_number credential only as a
// reference, and erasure takes it with the subject.
func TestErasureAndExportTakeTheSealedIDNumber(t *testing.T) {
	var svc *compliance.Service
	late := &lateRing{}
	env := apitest.Start(t, func(d *api.Deps) {
		keys := d.Pseudonyms.(*vault.SystemKeys)
		v, err := verification.New(verification.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Accounts: banklink.NewAccountStore(d.DB), Keys: keys, Logger: d.Logger})
		if err != nil {
			t.Fatal(err)
		}
		d.Verification = v
		svc = compliance.NewService(d.DB, d.Auditor, late, nil)
		d.Compliance = svc
	})
	late.ring = env.Ring
	ce := &complianceEnv{Env: env, svc: svc, console: env.ServiceClient(t, "compliance-console")}
	status, _, body := apitest.Do(t, nil, "POST", env.Public.URL+"/v1/accounts", userToken(t, "user_za_erase"), "application/json", zaBody(nil))
	var a accountBody
	want(t, status, 201, body, &a)
	var idRef string
	if err := env.DB.Pool.QueryRow(context.Background(), `SELECT holder_id_ref FROM accounts WHERE id = $1`, a.ID).Scan(&idRef); err != nil {
		t.Fatal(err)
	}

	status, body = ce.call(t, "GET", "/subjects/user_za_erase/export", staff(t, "staff_a"), "")
	if status != 200 {
		t.Fatalf("export = %d %s", status, body)
	}
	if strings.Contains(body, canaryIDNumber) || strings.Contains(body, canaryZAAccount) || strings.Contains(body, "Lindiwe") {
		t.Fatal("the export carries a secret")
	}
	var out compliance.SubjectExport
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	kinds := string(mustJSON(t, out.Records["credentials"]))
	if !strings.Contains(kinds, `"kind":"id_number"`) || !strings.Contains(kinds, idRef) {
		t.Fatalf("the export does not list the id_number credential: %s", kinds)
	}
	if accts := string(mustJSON(t, out.Records["accounts"])); !strings.Contains(accts, `"holder_id_ref":"`+idRef+`"`) || !strings.Contains(accts, `"bank_id":"za_capitec"`) {
		t.Fatalf("the export's account: %s", accts)
	}

	status, body = ce.call(t, "POST", "/erasure-requests", staff(t, "staff_a"), `{"subject_id":"user_za_erase","reason":"TICKET-9"}`)
	if status != 201 {
		t.Fatalf("request = %d %s", status, body)
	}
	era := decode[erasureBody](t, body)
	status, body = ce.call(t, "POST", "/erasure-requests/"+era.ID+"/approve", staff(t, "staff_b"), "")
	if status != 200 || !strings.Contains(body, `"completed"`) {
		t.Fatalf("approve = %d %s", status, body)
	}
	if found := rowsMentioning(t, env, idRef); len(found) > 0 {
		// The audit log keeps references (never the number), by design.
		delete(found, "public.audit_entries")
		if len(found) > 0 {
			t.Fatalf("after erasure, rows still name the ID credential: %v", found)
		}
	}
	if n := countWhere(t, env, `SELECT count(*) FROM credentials WHERE kind = 'id_number'`); n != 0 {
		t.Fatalf("%d id_number credentials survive the erasure", n)
	}
}

func countWhere(t *testing.T, env *apitest.Env, q string, args ...any) int {
	t.Helper()
	var n int
	if err := env.DB.Pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(fmt.Errorf("%s: %w", q, err))
	}
	return n
}

func TestConcurrentEntriesOfOneSouthAfricanAccountMakeOne(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_za_race")
	got := race(t, 20, func() int {
		status, _ := ve.call(t, "POST", "/v1/accounts", tok, zaBody(nil))
		return status
	})
	if got[201] != 1 || got[409] != 19 {
		t.Fatalf("statuses = %v, want one 201 and 19 409s", got)
	}
	if n := ve.count(t, `SELECT count(*) FROM credentials WHERE kind = 'id_number'`); n != 1 {
		t.Fatalf("%d id_number credentials, want 1 (the refused entries seal nothing)", n)
	}
}

// A holder's ID number belongs to its account: the record binds the account
// as owner, and the account's holder_id_ref is the pointer the vault's
// pointer check (PointersTo, CheckPointers) finds, so a re-seal or a reveal
// that checks pointers accepts it and refuses it for anyone else.
func TestASouthAfricanIDNumberIsOwnedByItsAccount(t *testing.T) {
	ve := startVerify(t)
	ctx := context.Background()
	a, err := ve.svc.CreateManualAccount(ctx, audit.User("user_za_owner", "req_1"), verification.ManualAccount{
		Country: "ZA", BankID: "za_capitec", AccountNumber: canaryZAAccount, AccountType: "savings",
		HolderName: "Lindiwe Dube", HolderIDNumber: canaryIDNumber})
	if err != nil {
		t.Fatal(err)
	}
	var numberRef, idRef string
	if err := ve.DB.Pool.QueryRow(ctx, `SELECT account_number_ref, holder_id_ref FROM accounts WHERE id = $1`, a.ID).
		Scan(&numberRef, &idRef); err != nil {
		t.Fatal(err)
	}
	owner := vault.AccountOwner(a.ID)
	for _, ref := range []string{numberRef, idRef} {
		owners, err := ve.Deps.BankLink.PointersTo(ctx, nil, ref)
		if err != nil || len(owners) != 1 || owners[0] != owner {
			t.Fatalf("PointersTo(%s) = %v, %v", ref, owners, err)
		}
		if err := vault.CheckPointers(ctx, ve.Deps.BankLink, nil, ref, owner); err != nil {
			t.Fatalf("CheckPointers(%s): %v", ref, err)
		}
		c, err := ve.Store.OpenOwned(ctx, owner, ref)
		if err != nil || c.Owner != owner || !c.OwnerBound {
			t.Fatalf("OpenOwned(%s) = %v", ref, err)
		}
		c.Zero()
	}
	// Another account pointing at the same ID number makes two pointers:
	// refused.
	b, err := ve.svc.CreateManualAccount(ctx, audit.User("user_za_owner", "req_2"), verification.ManualAccount{
		Country: "ZA", BankID: "za_fnb", AccountNumber: "62012345678", AccountType: "cheque", HolderName: "B"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ve.DB.Pool.Exec(ctx, `UPDATE accounts SET holder_id_ref = $1 WHERE id = $2`, idRef, b.ID); err != nil {
		t.Fatal(err)
	}
	if err := vault.CheckPointers(ctx, ve.Deps.BankLink, nil, idRef, owner); kluis.ErrorCode(err) != vault.EIntegrity {
		t.Fatalf("two pointers to one ID number: %v", err)
	}
	if _, err := ve.Store.OpenOwned(ctx, vault.AccountOwner(b.ID), idRef); kluis.ErrorCode(err) != vault.EIntegrity {
		t.Fatalf("another account's ID number: %v", err)
	}
}
