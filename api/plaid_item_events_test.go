package api_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
)

// itemEventsOf lists the types of the item's events in the outbox, oldest
// first, and their payloads.
func (be *bankEnv) itemEventsOf(t *testing.T, itemID string) ([]string, []string) {
	t.Helper()
	rows, err := be.DB.Pool.Query(context.Background(), `SELECT type, payload::text FROM outbox
		WHERE payload->'data'->>'item_id' = $1 ORDER BY created_at, id`, itemID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var types, payloads []string
	for rows.Next() {
		var typ, payload string
		if err := rows.Scan(&typ, &payload); err != nil {
			t.Fatal(err)
		}
		types, payloads = append(types, typ), append(payloads, payload)
	}
	return types, payloads
}

// Issue 14 point 6: apps are told of every change of an item's life, each
// event written with its change (one event per audited change), carrying
// the item's id and status and never a secret; the item's credential_ref
// stays the same across a rotation.
func TestItemEventsTellAppsOfEveryChangeWithNoSecret(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_item_events")
	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	pid := providerItemID(t, be, it.ID)
	secrets := []string{plaidtest.Secret}
	pit, _ := be.plaid.Item(pid)
	secrets = append(secrets, pit.AccessToken)
	for _, a := range pit.Accounts {
		secrets = append(secrets, a.Number)
	}
	_, internal := be.internalItem(t, it.ID)

	// login required (webhook), repaired (update mode), login required
	// again, repaired by Plaid's LOGIN_REPAIRED.
	wh := be.plaid.LoginRequiredWebhook(pid)
	status, body := be.webhookPost(t, "plaid", wh.Header, wh.Body)
	want(t, status, 200, body, nil)
	be.repair(t, tok, it.ID)
	wh = be.plaid.FireWebhook(pid, "ITEM", "PENDING_EXPIRATION", map[string]any{"consent_expiration_time": "2027-01-01T00:00:00Z"})
	status, body = be.webhookPost(t, "plaid", wh.Header, wh.Body)
	want(t, status, 200, body, nil)
	wh = be.plaid.FireWebhook(pid, "ITEM", "LOGIN_REPAIRED", nil)
	status, body = be.webhookPost(t, "plaid", wh.Header, wh.Body)
	want(t, status, 200, body, nil)
	// accounts added
	be.plaid.AddAccount(pid)
	wh = be.plaid.FireWebhook(pid, "ITEM", "NEW_ACCOUNTS_AVAILABLE", nil)
	status, body = be.webhookPost(t, "plaid", wh.Header, wh.Body)
	want(t, status, 200, body, nil)
	// token rotated, under the same credential_ref
	dueForRotation(t, be)
	if res, err := be.svc.RotateAccessTokens(context.Background(), rotateAfter, 0); err != nil || res.Rotated != 1 {
		t.Fatalf("rotation = %+v, %v", res, err)
	}
	if _, after := be.internalItem(t, it.ID); after.CredentialRef != internal.CredentialRef {
		t.Fatalf("credential_ref changed across rotation: %s → %s", internal.CredentialRef, after.CredentialRef)
	}
	rotated, _ := be.plaid.Item(pid)
	secrets = append(secrets, rotated.AccessToken)
	// removed
	status, _, body = be.call(t, "DELETE", "/v1/items/"+it.ID, tok, "")
	want(t, status, 204, body, nil)

	types, payloads := be.itemEventsOf(t, it.ID)
	wantTypes := []string{"item.created", "item.login_required", "item.repaired", "item.login_required", "item.repaired",
		"item.accounts_added", "item.token_rotated", "item.removed"}
	if strings.Join(types, " ") != strings.Join(wantTypes, " ") {
		t.Fatalf("events = %v\nwant %v", types, wantTypes)
	}

	// revoked and relink_required, on items of their own
	revoked := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	wh = be.plaid.FireWebhook(providerItemID(t, be, revoked.ID), "ITEM", "USER_PERMISSION_REVOKED", nil)
	status, body = be.webhookPost(t, "plaid", wh.Header, wh.Body)
	want(t, status, 200, body, nil)
	relink := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	dueForRotation(t, be)
	be.plaid.LoseAnswerNext(plaidtest.EndpointAccessTokenInvalidate, 1)
	if _, err := be.svc.RotateAccessTokens(context.Background(), rotateAfter, 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ item, typ string }{{revoked.ID, "item.revoked"}, {relink.ID, "item.relink_required"}} {
		types, more := be.itemEventsOf(t, tc.item)
		if len(types) != 2 || types[0] != "item.created" || types[1] != tc.typ {
			t.Fatalf("%s: events = %v", tc.typ, types)
		}
		payloads = append(payloads, more...)
	}

	// One event per audited change: written in the change's transaction.
	for typ, action := range map[string]string{"item.login_required": "item.login_required", "item.repaired": "item.login_repaired",
		"item.removed": "item.removed", "item.token_rotated": "item.access_token_rotated", "item.accounts_added": "item.accounts_added"} {
		if n, events := auditCount(t, be.Env, `action = $1 AND target = $2`, action, it.ID), be.outboxCount(t, typ, it.ID); n != events {
			t.Fatalf("%s: %d audit entries, %d events", typ, n, events)
		}
	}
	for _, p := range payloads {
		for _, s := range secrets {
			if s != "" && strings.Contains(p, s) {
				t.Fatalf("an item event carries a secret: %s", p)
			}
		}
		if !strings.Contains(p, `"item_id"`) || !strings.Contains(p, `"status"`) {
			t.Fatalf("an item event without item_id and status: %s", p)
		}
	}
}
