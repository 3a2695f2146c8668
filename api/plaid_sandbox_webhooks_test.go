package api_test

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
	"github.com/kluis-dev/kluis/banklink/sandbox"
)

// webhookTrace is what one webhook did in kluis: the kind and outcome
// recorded, the item's status after it, and the audit entries and apps'
// events it wrote.
type webhookTrace struct {
	Kind, Outcome, Status string
	Audit, Events         []string
}

// traceWebhook posts body, signed by provider, to /webhooks/{provider} and
// returns what it did to the item.
func (be *bankEnv) traceWebhook(t *testing.T, provider, itemID string, sign func([]byte) map[string]string, body []byte) webhookTrace {
	t.Helper()
	ctx := context.Background()
	var lastEvent, lastAudit int64
	if err := be.DB.Pool.QueryRow(ctx, `SELECT COALESCE(max(id), 0) FROM provider_webhook_events`).Scan(&lastEvent); err != nil {
		t.Fatal(err)
	}
	if err := be.DB.Pool.QueryRow(ctx, `SELECT COALESCE(max(seq), 0) FROM audit_entries`).Scan(&lastAudit); err != nil {
		t.Fatal(err)
	}
	eventsBefore := be.outboxTypes(t, itemID)
	h := map[string][]string{}
	for k, v := range sign(body) {
		h[k] = []string{v}
	}
	status, resp := be.webhookPost(t, provider, h, body)
	want(t, status, 200, resp, nil)
	var tr webhookTrace
	if err := be.DB.Pool.QueryRow(ctx, `SELECT kind, outcome FROM provider_webhook_events WHERE id > $1 AND provider = $2`,
		lastEvent, provider).Scan(&tr.Kind, &tr.Outcome); err != nil {
		t.Fatalf("the %s webhook was not recorded once: %v", provider, err)
	}
	tr.Status = be.itemStatus(t, itemID)
	rows, err := be.DB.Pool.Query(ctx, `SELECT action || ':' || outcome FROM audit_entries
		WHERE seq > $1 AND actor_kind = 'provider' AND actor = $2 ORDER BY action`, lastAudit, provider)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			t.Fatal(err)
		}
		tr.Audit = append(tr.Audit, a)
	}
	after := be.outboxTypes(t, itemID)
	for typ, n := range after {
		for i := eventsBefore[typ]; i < n; i++ {
			tr.Events = append(tr.Events, typ)
		}
	}
	sort.Strings(tr.Events)
	return tr
}

// outboxTypes counts the apps' events about an item by type.
func (be *bankEnv) outboxTypes(t *testing.T, itemID string) map[string]int {
	t.Helper()
	rows, err := be.DB.Pool.Query(context.Background(), `SELECT type, count(*) FROM outbox
		WHERE payload->'data'->>'item_id' = $1 GROUP BY type`, itemID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var typ string
		var n int
		if err := rows.Scan(&typ, &n); err != nil {
			t.Fatal(err)
		}
		out[typ] = n
	}
	return out
}

// TestOnePlaidShapedWebhookIsHandledAlikeForASandboxItemAndAPlaidItem
// (issue 14, "the sandbox provider's webhooks in Plaid's shapes, so one
// handler serves both"): the same Plaid-shaped body, naming each
// provider's own item and account, signed by the sandbox and by Plaid, takes
// the one decoding and handling path: the same kind and outcome, the same
// state transition, the same audit entries and the same events for the
// apps. Only the signature differs.
func TestOnePlaidShapedWebhookIsHandledAlikeForASandboxItemAndAPlaidItem(t *testing.T) {
	clock := &testClock{}
	clock.Advance(-3 * time.Minute) // Plaid's clock: each delivery a few seconds after the last
	be := startBoth(t, plaidtest.WithClock(clock))
	tok := userToken(t, "user_one_webhook_handler")
	spec := plaidtest.LoadSpec(t)

	sbItem := be.linkSandbox(t, tok, sandbox.InstitutionAuth)
	s, _ := be.sessionWith(t, tok, `{"products":["auth"],"provider":"plaid"}`)
	pub, err := be.plaid.CompleteLink(s.LinkToken, plaidtest.InstitutionAuth)
	if err != nil {
		t.Fatal(err)
	}
	plItem := be.exchange(t, tok, s.ID, pub, 201)

	type side struct {
		provider, itemID, providerItemID, providerAccountID string
		sign                                                func([]byte) map[string]string
	}
	sideOf := func(provider string, it itemBody, sign func([]byte) map[string]string) side {
		var acct string
		if err := be.DB.Pool.QueryRow(context.Background(), `SELECT provider_account_id FROM accounts WHERE id = $1`,
			it.Accounts[0].ID).Scan(&acct); err != nil {
			t.Fatal(err)
		}
		return side{provider, it.ID, providerItemID(t, be, it.ID), acct, sign}
	}
	sides := []side{
		sideOf("sandbox", sbItem, func(body []byte) map[string]string {
			return map[string]string{sandbox.SignatureHeader: be.sandbox.Sign(time.Now(), body)}
		}),
		sideOf("plaid", plItem, func(body []byte) map[string]string {
			clock.Advance(5 * time.Second) // a new delivery has a later iat, as Plaid's does
			return map[string]string{plaidtest.VerificationHeader: be.plaid.Sign(body, plaidtest.Valid).Header.Get(plaidtest.VerificationHeader)}
		}),
	}

	itemErr := func(code string) string {
		return `,"error":{"error_type":"ITEM_ERROR","error_code":"` + code + `","error_message":"m","display_message":null,"status":400}`
	}
	steps := []struct {
		name, typ, code, extra string
		want                   webhookTrace
	}{
		{"ITEM_LOGIN_REQUIRED", "ITEM", "ERROR", itemErr("ITEM_LOGIN_REQUIRED"),
			webhookTrace{"login_required", "applied", "login_required", []string{"item.login_required:success"}, []string{"item.login_required"}}},
		{"ITEM_LOGIN_REQUIRED again", "ITEM", "ERROR", itemErr("ITEM_LOGIN_REQUIRED"),
			webhookTrace{"login_required", "no_change", "login_required", nil, nil}},
		{"LOGIN_REPAIRED", "ITEM", "LOGIN_REPAIRED", "",
			webhookTrace{"login_repaired", "applied", "active", []string{"item.login_repaired:success"}, []string{"item.repaired"}}},
		{"an outage", "ITEM", "ERROR", itemErr("INSTITUTION_DOWN"),
			webhookTrace{"item_error", "ignored", "active", nil, nil}},
		{"PENDING_DISCONNECT", "ITEM", "PENDING_DISCONNECT", `,"reason":"INSTITUTION_TOKEN_EXPIRATION","disconnect_time":"2030-01-15T13:25:17Z"`,
			webhookTrace{"login_required", "applied", "login_required", []string{"item.login_required:success"}, []string{"item.login_required"}}},
		{"LOGIN_REPAIRED again", "ITEM", "LOGIN_REPAIRED", "",
			webhookTrace{"login_repaired", "applied", "active", []string{"item.login_repaired:success"}, []string{"item.repaired"}}},
		{"NEW_ACCOUNTS_AVAILABLE with none shared yet", "ITEM", "NEW_ACCOUNTS_AVAILABLE", "",
			webhookTrace{"new_accounts", "no_change", "active", nil, nil}},
		{"WEBHOOK_UPDATE_ACKNOWLEDGED", "ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED", `,"new_webhook_url":"https://kluis.test/webhooks/{provider}"`,
			webhookTrace{"webhook_updated", "ignored", "active", nil, nil}},
		{"SMS_MICRODEPOSITS_VERIFICATION", "AUTH", "SMS_MICRODEPOSITS_VERIFICATION", `,"account_id":"{account}","status":"MANUALLY_VERIFIED"`,
			webhookTrace{"auth_verified", "applied", "active", []string{"account.provider_verification:success"}, nil}},
		{"SMS_MICRODEPOSITS_VERIFICATION again", "AUTH", "SMS_MICRODEPOSITS_VERIFICATION", `,"account_id":"{account}","status":"MANUALLY_VERIFIED"`,
			webhookTrace{"auth_verified", "no_change", "active", nil, nil}},
		{"USER_ACCOUNT_REVOKED", "ITEM", "USER_ACCOUNT_REVOKED", `,"account_id":"{account}"`,
			webhookTrace{Kind: "account_revoked", Outcome: "applied", Status: "active"}},
		{"USER_PERMISSION_REVOKED", "ITEM", "USER_PERMISSION_REVOKED", itemErr("USER_PERMISSION_REVOKED"),
			webhookTrace{Kind: "revoked", Outcome: "applied", Status: "revoked"}},
		{"a code kluis does not act on", "ITEM", "SOMETHING_NEW", "",
			webhookTrace{"unknown", "ignored", "revoked", nil, nil}},
	}
	for _, st := range steps {
		var traces []webhookTrace
		for _, sd := range sides {
			extra := strings.NewReplacer("{account}", sd.providerAccountID, "{provider}", sd.provider).Replace(st.extra)
			body := []byte(fmt.Sprintf(`{"webhook_type":%q,"webhook_code":%q,"item_id":%q%s,"environment":"sandbox"}`,
				st.typ, st.code, sd.providerItemID, extra))
			if st.code != "SOMETHING_NEW" {
				if bad := spec.ValidateWebhook(body); len(bad) > 0 {
					t.Fatalf("%s: the test's body is not in Plaid's shape: %v", st.name, bad)
				}
			}
			traces = append(traces, be.traceWebhook(t, sd.provider, sd.itemID, sd.sign, body))
		}
		sb, pl := traces[0], traces[1]
		t.Logf("%s: %+v", st.name, sb)
		if !reflect.DeepEqual(sb, pl) {
			t.Fatalf("%s: handled differently:\n sandbox %+v\n plaid   %+v", st.name, sb, pl)
		}
		if sb.Kind != st.want.Kind || sb.Outcome != st.want.Outcome || sb.Status != st.want.Status ||
			(st.want.Audit != nil && !reflect.DeepEqual(sb.Audit, st.want.Audit)) ||
			(st.want.Events != nil && !reflect.DeepEqual(sb.Events, st.want.Events)) {
			t.Fatalf("%s: %+v, want %+v", st.name, sb, st.want)
		}
		if st.want.Outcome == "applied" && len(sb.Audit) == 0 {
			t.Fatalf("%s: applied without an audit entry", st.name)
		}
		if st.want.Outcome != "applied" && (len(sb.Audit) != 0 || len(sb.Events) != 0) {
			t.Fatalf("%s: %s wrote %v and %v", st.name, st.want.Outcome, sb.Audit, sb.Events)
		}
	}
}
