package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/accountnumber"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
)

// lateRing lets the compliance service be built before apitest has made
// the key ring it will shred with.
type lateRing struct{ ring *vault.KeyRing }

func (l *lateRing) DestroySubjectKeys(ctx context.Context, tx pgx.Tx, subjectID string) (int, error) {
	return l.ring.DestroySubjectKeys(ctx, tx, subjectID)
}

// flakyRevoker stands in for bank linking's provider revocation: it fails
// (the provider is down) while down is set, and counts its calls.
type flakyRevoker struct {
	db    *postgres.DB
	down  atomic.Bool
	calls atomic.Int32
}

func (f *flakyRevoker) RevokeSubject(ctx context.Context, subjectID string, fence compliance.RevokeFence) (compliance.Revocation, error) {
	f.calls.Add(1)
	if f.down.Load() {
		return compliance.Revocation{}, kluis.Unavailable("bank provider", fmt.Errorf("sandbox down"))
	}
	err := f.db.InTx(ctx, func(tx pgx.Tx) error { return fence(ctx, tx, "itm_flaky", true) })
	return compliance.Revocation{}, err
}

func (f *flakyRevoker) Live(context.Context, pgx.Tx, string) (int, error) { return 0, nil }

type complianceEnv struct {
	*apitest.Env
	svc     *compliance.Service
	revoker *flakyRevoker
	console *http.Client
}

func startCompliance(t *testing.T) *complianceEnv {
	t.Helper()
	late := &lateRing{}
	ce := &complianceEnv{revoker: &flakyRevoker{}}
	ce.Env = apitest.Start(t, func(d *api.Deps) {
		ce.revoker.db = d.DB
		ce.svc = compliance.NewService(d.DB, d.Auditor, late, nil)
		ce.svc.AddRevoker(ce.revoker)
		ce.svc.SetSealedOpener(d.Vault)
		d.Compliance = ce.svc
	})
	late.ring = ce.Ring
	ce.console = ce.ServiceClient(t, "compliance-console")
	return ce
}

func staff(t *testing.T, id string) string {
	t.Helper()
	return jwttest.StaffToken(t, jwttest.WithSubject(id))
}

func (ce *complianceEnv) call(t *testing.T, method, path, token, body string) (int, string) {
	t.Helper()
	ct := ""
	if body != "" {
		ct = "application/json"
	}
	status, _, out := apitest.Do(t, ce.console, method, ce.Internal.URL+"/compliance/v1"+path, token, ct, body)
	return status, out
}

// subjectData is what a linked user leaves in kluis: sealed credentials, an
// item, an account, a link session, a verification, a provider webhook.
type subjectData struct {
	sub, subjectID string
	tokenRef       string
	numberRef      string
}

func makeSubjectData(t *testing.T, env *apitest.Env, sub string) subjectData {
	t.Helper()
	ctx := context.Background()
	d := subjectData{sub: sub}
	d.tokenRef = sealFor(t, env, sub, banklink.KindAccessToken, `{"access_token":"access-sandbox-`+sub+`","provider":"sandbox"}`)
	d.numberRef = sealFor(t, env, sub, accountnumber.Kind, `{"account_number":"62001234567","routing_number":"250655"}`)
	err := env.DB.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		if d.subjectID, err = vault.LookupSubject(ctx, tx, sub); err != nil {
			return err
		}
		item, acc, ver := kluis.NewID(kluis.PrefixItem), kluis.NewID(kluis.PrefixAccount), kluis.NewID(kluis.PrefixVerification)
		stmts := []struct {
			sql  string
			args []any
		}{
			{`INSERT INTO items (id, subject_id, provider, provider_item_id, institution_id, institution_name, status, credential_ref)
				VALUES ($1, $2, 'sandbox', $3, 'ins_sandbox', 'Sandbox Bank', 'active', $4)`, []any{item, d.subjectID, kluis.NewID("pi_"), d.tokenRef}},
			{`INSERT INTO accounts (id, subject_id, item_id, provider_account_id, name, mask, account_number_ref)
				VALUES ($1, $2, $3, 'pa_1', 'Cheque', '4567', $4)`, []any{acc, d.subjectID, item, d.numberRef}},
			{`INSERT INTO link_sessions (id, subject_id, provider, mode, status, expires_at, exchanged_item_id, public_token_hash)
				VALUES ($1, $2, 'sandbox', 'new', 'exchanged', now(), $3, $4)`, []any{kluis.NewID(kluis.PrefixLinkSession), d.subjectID, item, make([]byte, 32)}},
			{`INSERT INTO verifications (id, subject_id, account_id, requested_method, method, status, attempts_remaining, expires_at, created_at, updated_at, app_id)
				VALUES ($1, $2, $3, 'auto', 'instant', 'verified', 3, now(), now(), now(), 'default')`, []any{ver, d.subjectID, acc}},
			{`INSERT INTO provider_webhook_events (provider, event_id, kind, item_id, outcome) VALUES ('sandbox', $1, 'new_accounts', $2, 'applied')`,
				[]any{kluis.NewID("evt_"), item}},
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s.sql, s.args...); err != nil {
				return fmt.Errorf("%s: %w", strings.Fields(s.sql)[2], err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("subject data: %v", err)
	}
	return d
}

func (ce *complianceEnv) reveal(t *testing.T, ref string) int {
	t.Helper()
	status, _, _ := apitest.Do(t, ce.ServiceClient(t, "payments"), "POST", revealURL(ce.Env, ref), "", "application/json", `{"purpose":"payment_initiation"}`)
	return status
}

// rowsMentioning counts, in every table of every schema kluis owns (found
// in the catalog, so a new table cannot be missed), the rows whose text
// contains s.
func rowsMentioning(t *testing.T, env *apitest.Env, s string) map[string]int {
	t.Helper()
	ctx := context.Background()
	rows, err := env.DB.Pool.Query(ctx, `
		SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) < 10 {
		t.Fatalf("the catalog lists only %d tables: %v", len(tables), tables)
	}
	found := map[string]int{}
	for _, table := range tables {
		var n int
		q := fmt.Sprintf(`SELECT count(*) FROM %s t WHERE strpos(to_jsonb(t)::text, $1) > 0`, table)
		if err := env.DB.Pool.QueryRow(ctx, q, s).Scan(&n); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		if n > 0 {
			found[table] = n
		}
	}
	return found
}

type erasureBody struct {
	ID        string              `json:"id"`
	Status    string              `json:"status"`
	Pseudonym string              `json:"subject_pseudonym"`
	Receipt   *compliance.Receipt `json:"receipt"`
	LastError string              `json:"last_error"`
}

func decode[T any](t *testing.T, body string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return v
}

func TestAnErasureThroughHTTP(t *testing.T) {
	ce := startCompliance(t)
	ctx := context.Background()
	gone := makeSubjectData(t, ce.Env, "user_erase_me")
	kept := makeSubjectData(t, ce.Env, "user_keep_me")
	if s := ce.reveal(t, gone.tokenRef); s != 200 {
		t.Fatalf("reveal before erasure = %d", s)
	}
	staffA, staffB := staff(t, "staff_a"), staff(t, "staff_b")

	status, body := ce.call(t, "POST", "/erasure-requests", staffA, `{"subject_id":"user_erase_me","reason":"TICKET-1"}`)
	if status != 201 {
		t.Fatalf("request = %d %s", status, body)
	}
	era := decode[erasureBody](t, body)
	if !strings.HasPrefix(era.ID, "era_") || era.Status != "pending_approval" {
		t.Fatalf("request = %s", body)
	}
	approve := "/erasure-requests/" + era.ID + "/approve"

	refusals := []struct {
		name   string
		client *http.Client
		token  string
		want   int
	}{
		{"the requester cannot approve", ce.console, staffA, 403},
		{"staff without mfa", ce.console, jwttest.StaffToken(t, jwttest.WithSubject("staff_b"), jwttest.WithAMR("pwd")), 403},
		{"staff without the compliance role", ce.console, jwttest.StaffToken(t, jwttest.WithSubject("staff_b"), jwttest.WithRoles("support")), 403},
		{"a service that may not carry compliance requests", ce.ServiceClient(t, "payments"), staffB, 403},
		{"a user token", ce.console, jwttest.Token(t, jwttest.WithSubject("user_erase_me")), 401},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			status, _, body := apitest.Do(t, r.client, "POST", ce.Internal.URL+"/compliance/v1"+approve, r.token, "", "")
			if status != r.want {
				t.Fatalf("approve = %d %s, want %d", status, body, r.want)
			}
		})
	}
	if n := auditCount(t, ce.Env, `action = 'erasure.approve' AND outcome = 'denied' AND details->>'reason' = 'requester_cannot_approve'`); n != 1 {
		t.Errorf("the refused self-approval is audited %d times, want 1", n)
	}

	// A legal hold blocks approval; the request stays open until it is lifted.
	status, body = ce.call(t, "POST", "/legal-holds", staffB, `{"subject_id":"user_erase_me","reason":"CASE-7"}`)
	if status != 201 {
		t.Fatalf("hold = %d %s", status, body)
	}
	hold := decode[compliance.LegalHold](t, body)
	status, body = ce.call(t, "POST", approve, staffB, "")
	if status != 409 || !strings.Contains(body, `"code":"legal_hold"`) {
		t.Fatalf("approve under hold = %d %s, want 409 legal_hold", status, body)
	}
	if _, body = ce.call(t, "GET", "/erasure-requests/"+era.ID, staffB, ""); decode[erasureBody](t, body).Status != "pending_approval" {
		t.Fatalf("after a refused approval: %s", body)
	}
	if status, body = ce.call(t, "DELETE", "/legal-holds/"+hold.ID, staffB, ""); status != 204 {
		t.Fatalf("lift = %d %s", status, body)
	}

	// The provider is down: the approval stands, the erasure waits.
	ce.revoker.down.Store(true)
	status, body = ce.call(t, "POST", approve, staffB, "")
	if status != 200 || decode[erasureBody](t, body).Status != "approved" {
		t.Fatalf("approve with the provider down = %d %s, want 200 approved", status, body)
	}
	if s := ce.reveal(t, gone.tokenRef); s != 200 {
		t.Fatalf("nothing may be erased before the provider revoked: reveal = %d", s)
	}
	// The next run (the erasure-resume job) completes it.
	ce.revoker.down.Store(false)
	if n, err := ce.svc.ResumeErasures(ctx); err != nil || n != 1 {
		t.Fatalf("resume = %d, %v", n, err)
	}
	status, body = ce.call(t, "GET", "/erasure-requests/"+era.ID, staffA, "")
	done := decode[erasureBody](t, body)
	if status != 200 || done.Status != "completed" || done.Receipt == nil {
		t.Fatalf("after resume = %d %s", status, body)
	}
	rc := done.Receipt
	if rc.RequestID != era.ID || rc.RequestedBy != "staff_a" || rc.ApprovedBy != "staff_b" || rc.ProviderItemsRevoked != 1 ||
		rc.SubjectKeysDestroyed != 1 || rc.Erased["credentials"] != 2 || rc.Erased["subjects"] != 1 || rc.Erased["provider_webhook_events"] != 1 {
		t.Errorf("receipt = %+v", rc)
	}
	for _, secret := range []string{"user_erase_me", gone.subjectID, "62001234567", "access-sandbox"} {
		if strings.Contains(body, secret) {
			t.Errorf("the receipt holds %q", secret)
		}
	}
	// Approving again changes nothing.
	if status, body = ce.call(t, "POST", approve, staffB, ""); status != 200 || decode[erasureBody](t, body).Status != "completed" {
		t.Errorf("approve again = %d %s", status, body)
	}

	for _, s := range []string{gone.subjectID, "user_erase_me"} {
		if found := rowsMentioning(t, ce.Env, s); len(found) > 0 {
			t.Errorf("rows still mention the erased subject (%s): %v", s[:4], found)
		}
	}
	for _, ref := range []string{gone.tokenRef, gone.numberRef} {
		if s := ce.reveal(t, ref); s != 404 {
			t.Errorf("reveal of an erased reference = %d, want 404", s)
		}
	}
	if s := ce.reveal(t, kept.tokenRef); s != 200 {
		t.Errorf("another subject's reveal = %d, want 200", s)
	}
	if found := rowsMentioning(t, ce.Env, kept.subjectID); len(found) < 6 {
		t.Errorf("the other subject lost rows: %v", found)
	}
	if n := auditCount(t, ce.Env, `subject_pseudonym = $1`, era.Pseudonym); n < 5 {
		t.Errorf("the erased subject's audit entries (by pseudonym) = %d, want them kept", n)
	}
	if _, err := audit.NewSealer(ce.DB, 0).SealPending(ctx); err != nil {
		t.Fatal(err)
	}
	status, body = ce.call(t, "POST", "/audit/verify", staffA, "")
	if status != 200 || !strings.Contains(body, `"ok":true`) {
		t.Fatalf("audit verify after erasure = %d %s", status, body)
	}
}

func TestLegalHoldsAndErasureRequestsAnswerForUnknownThings(t *testing.T) {
	ce := startCompliance(t)
	tok := staff(t, "staff_a")
	cases := []struct {
		name, method, path, body string
		want                     int
	}{
		{"a hold on a subject kluis holds nothing on", "POST", "/legal-holds", `{"subject_id":"nobody","reason":"CASE-1"}`, 404},
		{"a hold without a reason", "POST", "/legal-holds", `{"subject_id":"nobody","reason":""}`, 400},
		{"an erasure of a subject kluis holds nothing on", "POST", "/erasure-requests", `{"subject_id":"nobody","reason":"T-1"}`, 404},
		{"an erasure request with an unknown field", "POST", "/erasure-requests", `{"subject_id":"x","reason":"T","extra":1}`, 400},
		{"lifting an unknown hold", "DELETE", "/legal-holds/hold_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "", 404},
		{"an unknown erasure request", "GET", "/erasure-requests/era_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "", 404},
		{"approving an unknown erasure request", "POST", "/erasure-requests/era_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/approve", "", 404},
		{"exporting an unknown subject", "GET", "/subjects/nobody/export", "", 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if status, body := ce.call(t, c.method, c.path, tok, c.body); status != c.want {
				t.Fatalf("%s %s = %d %s, want %d", c.method, c.path, status, body, c.want)
			}
		})
	}
	makeSubjectData(t, ce.Env, "user_twice")
	if status, _ := ce.call(t, "POST", "/erasure-requests", tok, `{"subject_id":"user_twice","reason":"T-1"}`); status != 201 {
		t.Fatal("first request refused")
	}
	if status, body := ce.call(t, "POST", "/erasure-requests", tok, `{"subject_id":"user_twice","reason":"T-2"}`); status != 409 {
		t.Fatalf("a second open request = %d %s, want 409", status, body)
	}
}

func TestASubjectExportHoldsEverythingButSecrets(t *testing.T) {
	ce := startCompliance(t)
	d := makeSubjectData(t, ce.Env, "user_export")
	if s := ce.reveal(t, d.tokenRef); s != 200 {
		t.Fatalf("reveal = %d", s)
	}
	status, body := ce.call(t, "GET", "/subjects/user_export/export", staff(t, "staff_a"), "")
	if status != 200 {
		t.Fatalf("export = %d %s", status, body)
	}
	var out compliance.SubjectExport
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"credentials": 2, "items": 1, "accounts": 1, "link_sessions": 1, "verifications": 1, "provider_webhook_events": 1}
	for table, n := range want {
		if len(out.Records[table]) != n {
			t.Errorf("export %s: %d records, want %d", table, len(out.Records[table]), n)
		}
	}
	records := string(mustJSON(t, out.Records))
	for _, col := range []string{`"envelope"`, `"blind_index"`, `"public_token_hash"`} {
		if strings.Contains(records, col) {
			t.Errorf("the export carries the column %s", col)
		}
	}
	for _, secret := range []string{"access-sandbox", "62001234567"} {
		if strings.Contains(body, secret) {
			t.Errorf("the export carries a secret")
		}
	}
	if !strings.Contains(string(mustJSON(t, out.Records["accounts"])), `"mask":"4567"`) {
		t.Errorf("the export lacks the account's mask: %s", mustJSON(t, out.Records["accounts"]))
	}
	if !strings.Contains(string(mustJSON(t, out.Records["items"])), d.tokenRef) {
		t.Error("the export lacks the item's credential reference")
	}
	reveals := 0
	for _, e := range out.AuditEntries {
		if e.Action == "credential.reveal" && e.Target == d.tokenRef {
			reveals++
		}
	}
	if reveals != 1 {
		t.Errorf("the export shows %d reveals, want 1", reveals)
	}
	if strings.Contains(body, "user_export") {
		t.Error("the export repeats the external id")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
