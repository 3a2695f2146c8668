package api_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/banklink/stitch/stitchtest"
	"github.com/kluis-dev/kluis/verification"
	"github.com/kluis-dev/kluis/verification/sandboxbav"
)

const (
	// canaryPassport is a Zimbabwean-shaped passport number found nowhere
	// else in the tests; its digits are a run the log scrubber masks.
	canaryPassport = "FN4826173"
	// canaryPassportCountry is its issuing country.
	canaryPassportCountry = "ZW"
)

// passportBody is zaBody with the holder identified by a passport instead
// of an ID number.
func passportBody(fields map[string]any) string {
	f := map[string]any{"holder_id_number": nil, "holder_passport_number": canaryPassport,
		"holder_passport_country": canaryPassportCountry}
	for k, v := range fields {
		f[k] = v
	}
	return zaBody(f)
}

// passportAccount enters a Capitec manual account whose number ends in
// suffix, its holder identified by the canary passport.
func (ve *verifyEnv) passportAccount(t *testing.T, tok, suffix string) string {
	t.Helper()
	status, body := ve.call(t, "POST", "/v1/accounts", tok, passportBody(map[string]any{"account_number": "147926" + suffix}))
	var a accountBody
	want(t, status, 201, body, &a)
	return a.ID
}

// TestAZAPassportBAVReachesEachOutcome: a holder
// without a South African ID number gives their passport and its country;
// the sandbox and Stitch's test server each reach every outcome with it,
// and Stitch receives it as a PassportInput with the country given.
func TestAZAPassportBAVReachesEachOutcome(t *testing.T) {
	cases := []struct {
		suffix, status string
		check          func(c map[string]*bool) bool
	}{
		{sandboxbav.SuffixVerified, "verified", func(c map[string]*bool) bool {
			return isTrue(c["account_exists"]) && isTrue(c["id_number_matches"]) && isTrue(c["name_matches"])
		}},
		{sandboxbav.SuffixNoAccount, "failed", func(c map[string]*bool) bool { return isFalse(c["account_exists"]) }},
		{sandboxbav.SuffixClosed, "failed", func(c map[string]*bool) bool { return isFalse(c["account_open"]) }},
		{sandboxbav.SuffixIDMismatch, "failed", func(c map[string]*bool) bool { return isFalse(c["id_number_matches"]) }},
		{sandboxbav.SuffixNameMismatch, "verified", func(c map[string]*bool) bool { return isFalse(c["name_matches"]) }},
		{sandboxbav.SuffixUnknown, "failed", func(c map[string]*bool) bool { return c["account_exists"] == nil && c["id_number_matches"] == nil }},
	}
	run := func(t *testing.T, ve *verifyEnv, prefix string, answer func()) {
		for _, tc := range cases {
			t.Run("an account ending in "+tc.suffix, func(t *testing.T) {
				tok := userToken(t, prefix+tc.suffix)
				acct := ve.passportAccount(t, tok, tc.suffix)
				status, v, body := ve.startBAV(t, tok, acct, "bank_account_verification")
				if status != 201 || v.Status != tc.status || !tc.check(v.Checks) {
					t.Fatalf("verification: %d %s", status, body)
				}
			})
		}
		t.Run("a pending one is completed by the poll job", func(t *testing.T) {
			tok := userToken(t, prefix+"pending")
			acct := ve.passportAccount(t, tok, sandboxbav.SuffixPendingIDMismatch)
			status, v, body := ve.startBAV(t, tok, acct, "auto")
			if status != 201 || v.Status != "pending" || v.Method != "bank_account_verification" {
				t.Fatalf("auto: %d %s", status, body)
			}
			answer()
			if res, err := ve.svc.PollBankVerifications(context.Background()); err != nil || res.Completed != 1 {
				t.Fatalf("poll: %+v %v", res, err)
			}
			status, body = ve.call(t, "GET", "/v1/verifications/"+v.ID, tok, "")
			var got bavBody
			want(t, status, 200, body, &got)
			if got.Status != "failed" || !isFalse(got.Checks["id_number_matches"]) {
				t.Fatalf("after the poll: %s", body)
			}
		})
	}

	t.Run("through the sandbox", func(t *testing.T) {
		ve := startVerify(t, func(o *verification.Options) { o.BankVerifiers = []verification.BankVerifier{sandboxbav.New()} })
		run(t, ve, "user_passport_sbx_", func() {})
	})
	t.Run("through Stitch", func(t *testing.T) {
		ve, srv := startStitchBAV(t)
		run(t, ve, "user_passport_stitch_", func() { srv.BankAnswers() })
		docs := srv.BAVDocuments()
		if len(docs) != len(cases)+1 {
			t.Fatalf("Stitch took %d verifications", len(docs))
		}
		for _, d := range docs {
			if d != (stitchtest.BAVDocument{Kind: "passport", Country: canaryPassportCountry}) {
				t.Fatalf("Stitch was sent %+v", d)
			}
		}
		// An ID number still goes as an identity document of country ZA.
		tok := userToken(t, "user_passport_stitch_id")
		acct := ve.zaAccount(t, tok, stitchtest.BAVVerified)
		if status, v, body := ve.startBAV(t, tok, acct, "bank_account_verification"); status != 201 || v.Status != "verified" {
			t.Fatalf("with an ID number: %d %s", status, body)
		}
		docs = srv.BAVDocuments()
		if d := docs[len(docs)-1]; d != (stitchtest.BAVDocument{Kind: "identityDocument", Country: "ZA"}) {
			t.Fatalf("Stitch was sent %+v for an ID number", d)
		}
	})
}

// TestAZAPassportIsCheckedAndBadInputChangesNothing: every malformed passport
// (or one given with an ID number, or half of one) is 400 naming its field,
// quoting nothing, and leaves no account, credential or audit entry behind.
func TestAZAPassportIsCheckedAndBadInputChangesNothing(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_passport_input")
	bad := []struct {
		name   string
		fields map[string]any
		field  string
	}{
		{"no country", map[string]any{"holder_passport_country": nil}, "holder_passport_country"},
		{"no number", map[string]any{"holder_passport_number": nil}, "holder_passport_number"},
		{"a lower-case country", map[string]any{"holder_passport_country": "zw"}, "holder_passport_country"},
		{"a three-letter country", map[string]any{"holder_passport_country": "ZWE"}, "holder_passport_country"},
		{"an unassigned country", map[string]any{"holder_passport_country": "ZZ"}, "holder_passport_country"},
		{"a lower-case number", map[string]any{"holder_passport_number": strings.ToLower(canaryPassport)}, "holder_passport_number"},
		{"a number with a space", map[string]any{"holder_passport_number": "FN 4826173"}, "holder_passport_number"},
		{"a number of four characters", map[string]any{"holder_passport_number": "FN48"}, "holder_passport_number"},
		{"a number of 21 characters", map[string]any{"holder_passport_number": canaryPassport + "482617348261"}, "holder_passport_number"},
		{"a number without digits", map[string]any{"holder_passport_number": "DUBELINDI"}, "holder_passport_number"},
		{"a passport and an ID number", map[string]any{"holder_id_number": canaryIDNumber}, "holder_passport_number"},
		{"a number as a JSON number", map[string]any{"holder_passport_number": 48261730}, ""},
	}
	before := ve.count(t, `SELECT count(*) FROM credentials`)
	audits := ve.count(t, `SELECT count(*) FROM audit_entries WHERE action = 'account.created_manual'`)
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			status, body := ve.call(t, "POST", "/v1/accounts", tok, passportBody(tc.fields))
			mustError(t, status, body, 400, "invalid_request")
			if f := errorField(t, body); f != tc.field {
				t.Fatalf("error.field = %q, want %q: %s", f, tc.field, body)
			}
			if strings.Contains(body, "4826173") || strings.Contains(body, "482617") {
				t.Fatalf("the error quotes the input: %s", body)
			}
		})
	}
	// A passport on a US account is refused too.
	status, body := ve.call(t, "POST", "/v1/accounts", tok,
		`{"account_number":"0001234567","routing_number":"021000021","account_type":"checking","holder_name":"A","holder_passport_number":"`+canaryPassport+`","holder_passport_country":"ZW"}`)
	mustError(t, status, body, 400, "invalid_request")
	if f := errorField(t, body); f != "holder_passport_number" {
		t.Fatalf("error.field = %q", f)
	}
	if n := ve.count(t, `SELECT count(*) FROM accounts`); n != 0 {
		t.Fatalf("%d accounts after bad input", n)
	}
	if n := ve.count(t, `SELECT count(*) FROM credentials`); n != before {
		t.Fatalf("credentials %d → %d after bad input", before, n)
	}
	if n := ve.count(t, `SELECT count(*) FROM audit_entries WHERE action = 'account.created_manual'`); n != audits {
		t.Fatalf("audit entries %d → %d after bad input", audits, n)
	}
	// The good one is taken, its passport sealed behind holder_id_ref.
	status, body = ve.call(t, "POST", "/v1/accounts", tok, passportBody(nil))
	var a accountBody
	want(t, status, 201, body, &a)
	if n := ve.count(t, `SELECT count(*) FROM accounts a JOIN credentials c ON c.ref = a.holder_id_ref
		WHERE a.id = $1 AND c.kind = 'id_number'`, a.ID); n != 1 {
		t.Fatalf("the passport is not sealed as the account's id_number credential (%d)", n)
	}
}

// TestAZAPassportCanaryNeverLeaves plants a passport number, enters accounts
// with it (good and bad), verifies one through Stitch, and searches the
// answers, the logs, a dump of the database (audit log included) and every
// column of every table for it in the clear.
func TestAZAPassportCanaryNeverLeaves(t *testing.T) {
	ve, _ := startStitchBAV(t)
	tok := userToken(t, "user_passport_canary")
	var bodies []string
	do := func(method, path, body string) (int, string) {
		status, resp := ve.call(t, method, path, tok, body)
		bodies = append(bodies, resp)
		return status, resp
	}
	status, resp := do("POST", "/v1/accounts", passportBody(map[string]any{"account_number": "147926" + stitchtest.BAVVerified}))
	var a accountBody
	want(t, status, 201, resp, &a)
	do("POST", "/v1/accounts", passportBody(map[string]any{"account_number": "147926" + stitchtest.BAVVerified})) // 409
	do("POST", "/v1/accounts", passportBody(map[string]any{"holder_passport_country": "ZZ"}))                     // 400
	do("POST", "/v1/accounts", passportBody(map[string]any{"holder_id_number": canaryIDNumber}))                  // 400
	do("POST", "/v1/accounts", passportBody(map[string]any{"passport": canaryPassport}))                          // 400 unknown field
	do("GET", "/v1/accounts/"+a.ID, "")
	status, resp = do("POST", "/v1/accounts/"+a.ID+"/verifications", `{"method":"bank_account_verification"}`)
	var v bavBody
	want(t, status, 201, resp, &v)
	if v.Status != "verified" {
		t.Fatalf("verification: %s", resp)
	}
	do("GET", "/v1/verifications/"+v.ID, "")

	secrets := []string{canaryPassport, "4826173", strings.ToLower(canaryPassport)}
	for _, b := range bodies {
		for _, s := range secrets {
			if strings.Contains(b, s) {
				t.Fatalf("a response carries %q: %s", s, b)
			}
		}
	}
	logs := ve.Logs.String()
	dump := pgDump(t, ve.DBURL)
	for _, s := range secrets {
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
}
