package api_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
	"github.com/kluis-dev/kluis/banklink/sandbox"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
)

// asOwner runs sql on the test database as the server's administrator, the
// way a fault is injected that no kluis role could cause: a trigger that
// makes one write fail.
func asOwner(t *testing.T, be *bankEnv, sql string) {
	t.Helper()
	app, err := url.Parse(be.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := url.Parse(pgtest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	admin.Path = app.Path
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// failWhen makes every update of table whose rows satisfy cond (on OLD and
// NEW) fail, until the returned function drops the trigger.
func failWhen(t *testing.T, be *bankEnv, table, cond string) func() {
	t.Helper()
	name := "test_fail_" + table
	asOwner(t, be, fmt.Sprintf(`
		CREATE FUNCTION %[1]s() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'injected failure'; END $$;
		CREATE TRIGGER %[1]s BEFORE UPDATE ON %[2]s FOR EACH ROW WHEN (%[3]s) EXECUTE FUNCTION %[1]s();`, name, table, cond))
	return func() {
		asOwner(t, be, fmt.Sprintf(`DROP TRIGGER %[1]s ON %[2]s; DROP FUNCTION %[1]s();`, name, table))
	}
}

// dueForRotation makes every item's token old enough to rotate.
func dueForRotation(t *testing.T, be *bankEnv) {
	t.Helper()
	if _, err := be.DB.Pool.Exec(context.Background(), `UPDATE items SET access_token_rotated_at = now() - interval '100 days'`); err != nil {
		t.Fatal(err)
	}
}

// revealRaw reveals ref as the payments service and returns status and body.
func (be *bankEnv) revealRaw(t *testing.T, ref string) (int, string) {
	t.Helper()
	status, _, body := apitest.Do(t, be.ServiceClient(t, "payments"), "POST", revealURL(be.Env, ref), "", "application/json",
		`{"purpose":"payment_initiation"}`)
	return status, body
}

// outboxCount counts events of type about the item.
func (be *bankEnv) outboxCount(t *testing.T, typ, itemID string) int {
	t.Helper()
	var n int
	if err := be.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox
		WHERE type = $1 AND payload->'data'->>'item_id' = $2`, typ, itemID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (be *bankEnv) credentialVersion(t *testing.T, ref string) vault.Versions {
	t.Helper()
	v, err := be.Store.CredentialVersions(context.Background(), be.DB.Pool, ref, false)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

const rotateAfter = 90 * 24 * time.Hour

func TestARotationWhoseSwitchFailsLeavesNoLiveTokenAfterDeleteOrErasure(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_switch_fails")
	byDelete := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	byErasure := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	_, internal := be.internalItem(t, byDelete.ID)
	dueForRotation(t, be)

	// The switch (the transaction that makes the fresh token current) fails.
	restore := failWhen(t, be, "items", "OLD.access_token_rotated_at IS DISTINCT FROM NEW.access_token_rotated_at")
	res, err := be.svc.RotateAccessTokens(context.Background(), rotateAfter, 0)
	restore()
	if err != nil || res.Failed != 2 || res.Rotated != 0 {
		t.Fatalf("rotation = %+v, %v; want two failed switches", res, err)
	}
	for _, it := range []itemBody{byDelete, byErasure} {
		_, in := be.internalItem(t, it.ID)
		if v := be.credentialVersion(t, in.CredentialRef); v.Version != 1 || !v.Pending {
			t.Fatalf("after a failed switch the credential is %+v; want version 1 with a pending successor", v)
		}
		if live := be.plaid.LiveTokens(providerItemID(t, be, it.ID)); len(live) != 1 {
			t.Fatalf("plaid has %d live tokens for the item, want 1 (the pending one)", len(live))
		}
		// The ref still reveals the current (now dead) version until the switch.
		if status, _ := be.revealRaw(t, in.CredentialRef); status != 200 {
			t.Fatalf("reveal during a cut-short rotation = %d", status)
		}
	}

	t.Run("delete revokes with the pending version too: nothing stays live at the provider", func(t *testing.T) {
		pid := providerItemID(t, be, byDelete.ID)
		removes := be.plaid.Calls(plaidtest.EndpointItemRemove)
		status, _, body := be.call(t, "DELETE", "/v1/items/"+byDelete.ID, tok, "")
		want(t, status, 204, body, nil)
		if got := be.plaid.Calls(plaidtest.EndpointItemRemove) - removes; got != 2 {
			t.Fatalf("%d /item/remove calls, want one per live version (2)", got)
		}
		if _, ok := be.plaid.Item(pid); ok || len(be.plaid.LiveTokens(pid)) != 0 {
			t.Fatal("the item is still live at Plaid")
		}
		if status, _ := be.revealRaw(t, internal.CredentialRef); status != 404 {
			t.Fatalf("reveal after delete = %d, want 404", status)
		}
		if n := auditCount(t, be.Env, `action = 'item.removed' AND target = $1 AND details->>'provider_revoked' = 'true'`, byDelete.ID); n != 1 {
			t.Fatalf("item.removed with provider_revoked audited %d times", n)
		}
	})
	t.Run("erasure's removal revokes with the pending version too", func(t *testing.T) {
		pid := providerItemID(t, be, byErasure.ID)
		sid, err := vault.LookupSubject(context.Background(), be.DB.Pool, "user_switch_fails")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		rev, err := be.svc.RevokeSubject(context.Background(), sid, func(_ context.Context, _ pgx.Tx, _ string, revoked bool) error {
			if revoked {
				n++
			}
			return nil
		})
		if err != nil || n != 1 || len(rev.Unrevoked) != 0 {
			t.Fatalf("RevokeSubject = %d revoked, %+v, %v; want 1 revoked", n, rev, err)
		}
		if _, ok := be.plaid.Item(pid); ok || len(be.plaid.LiveTokens(pid)) != 0 {
			t.Fatal("the item is still live at Plaid after erasure's removal")
		}
	})
}

func TestACutShortRotationIsFinishedByTheNextRunUnderTheSameRef(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_switch_resumed")
	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	_, internal := be.internalItem(t, it.ID)
	_, before := be.reveal(t, be.ServiceClient(t, "payments"), internal.CredentialRef)
	dueForRotation(t, be)
	restore := failWhen(t, be, "items", "OLD.access_token_rotated_at IS DISTINCT FROM NEW.access_token_rotated_at")
	if res, _ := be.svc.RotateAccessTokens(context.Background(), rotateAfter, 0); res.Failed != 1 {
		t.Fatalf("first run = %+v", res)
	}
	restore()
	// Scheduled rotation is off now: the next run still finishes the switch.
	res, err := be.svc.RotateAccessTokens(context.Background(), 0, 0)
	if err != nil || res.Finished != 1 || res.Failed != 0 {
		t.Fatalf("second run = %+v, %v; want the switch finished", res, err)
	}
	if got := be.plaid.Calls(plaidtest.EndpointAccessTokenInvalidate); got != 1 {
		t.Fatalf("%d rotations at Plaid, want 1", got)
	}
	_, after := be.reveal(t, be.ServiceClient(t, "payments"), internal.CredentialRef)
	if after["access_token"] == before["access_token"] {
		t.Fatal("the ref still reveals the old token")
	}
	if _, ok := be.plaid.ItemByAccessToken(after["access_token"]); !ok {
		t.Fatal("the ref held before the rotation does not reveal the live token")
	}
	if v := be.credentialVersion(t, internal.CredentialRef); v.Version != 2 || v.Pending {
		t.Fatalf("credential = %+v, want version 2, nothing pending", v)
	}
	if be.outboxCount(t, "item.token_rotated", it.ID) != 1 {
		t.Fatal("no item.token_rotated event")
	}
}

func TestAFreshTokenThatCannotBeStoredIsRevokedAtTheProvider(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_store_fails")
	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	pid := providerItemID(t, be, it.ID)
	dueForRotation(t, be)
	restore := failWhen(t, be, "credentials", "OLD.pending_envelope IS NULL AND NEW.pending_envelope IS NOT NULL")
	res, err := be.svc.RotateAccessTokens(context.Background(), rotateAfter, 0)
	restore()
	if err != nil || res.Failed != 1 {
		t.Fatalf("rotation = %+v, %v; want one failure", res, err)
	}
	if got := be.plaid.Calls(plaidtest.EndpointItemRemove); got != 1 {
		t.Fatalf("%d /item/remove calls, want the fresh token revoked once", got)
	}
	if _, ok := be.plaid.Item(pid); ok || len(be.plaid.LiveTokens(pid)) != 0 {
		t.Fatal("the fresh token kluis could not store is still live at Plaid")
	}
	if got := be.itemStatus(t, it.ID); got != "relink_required" {
		t.Fatalf("item is %s, want relink_required", got)
	}
	if be.outboxCount(t, "item.relink_required", it.ID) != 1 {
		t.Fatal("no item.relink_required event")
	}
	status, _, body := be.call(t, "DELETE", "/v1/items/"+it.ID, tok, "")
	want(t, status, 200, body, nil)
	if strings.TrimSpace(body) != `{"provider_revoked":false}` {
		t.Fatalf("delete body = %s", body)
	}
}

func TestALostRotationAnswerLeavesTheItemRelinkRequiredNeverActive(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_lost_answer")
	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	pid := providerItemID(t, be, it.ID)
	dueForRotation(t, be)
	// Plaid invalidates the old token and answers; the answer never arrives.
	be.plaid.LoseAnswerNext(plaidtest.EndpointAccessTokenInvalidate, 1)
	res, err := be.svc.RotateAccessTokens(context.Background(), rotateAfter, 0)
	if err != nil || res.RelinkRequired != 1 || res.Rotated != 0 {
		t.Fatalf("rotation = %+v, %v; want the item found lost", res, err)
	}
	status, _, body := be.call(t, "GET", "/v1/items/"+it.ID, tok, "")
	var got itemBody
	want(t, status, 200, body, &got)
	if got.Status != "relink_required" {
		t.Fatalf("item is %s after a lost rotation answer, want relink_required", got.Status)
	}
	if be.outboxCount(t, "item.relink_required", it.ID) != 1 {
		t.Fatal("no item.relink_required event")
	}
	if n := auditCount(t, be.Env, `action = 'item.relink_required' AND target = $1`, it.ID); n != 1 {
		t.Fatalf("item.relink_required audited %d times", n)
	}
	// Update mode cannot repair it; the next run does not touch it.
	status, _, body = be.call(t, "POST", "/v1/link/sessions", tok, `{"products":["auth"],"item_id":"`+it.ID+`"}`)
	mustError(t, status, body, 409, "conflict")
	if res, _ := be.svc.RotateAccessTokens(context.Background(), rotateAfter, 0); res != (banklink.RotationResult{}) {
		t.Fatalf("a later run = %+v, want nothing", res)
	}
	// Delete removes it in kluis and says the provider could not revoke.
	removes := be.plaid.Calls(plaidtest.EndpointItemRemove)
	status, _, body = be.call(t, "DELETE", "/v1/items/"+it.ID, tok, "")
	want(t, status, 200, body, nil)
	if strings.TrimSpace(body) != `{"provider_revoked":false}` {
		t.Fatalf("delete body = %s", body)
	}
	if be.plaid.Calls(plaidtest.EndpointItemRemove) != removes {
		t.Fatal("kluis asked the provider to remove with a token it knows is dead")
	}
	if n := auditCount(t, be.Env, `action = 'item.removed' AND target = $1 AND details->>'provider_revoked' = 'false'`, it.ID); n != 1 {
		t.Fatalf("item.removed with provider_revoked false audited %d times", n)
	}
	status, _, body = be.call(t, "GET", "/v1/items/"+it.ID, tok, "")
	mustError(t, status, body, 404, "not_found")
	// What a lost answer cannot be undone by kluis: the token Plaid issued
	// is live there and known to nobody (docs/SECURITY.md).
	if len(be.plaid.LiveTokens(pid)) != 1 {
		t.Fatal("plaidtest did not play the lost answer")
	}
}

func TestADeleteOfAnItemWhoseTokenIsAlreadyDeadAnswers200(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_dead_token")
	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	pid := providerItemID(t, be, it.ID)
	live := be.plaid.LiveTokens(pid)
	if len(live) != 1 {
		t.Fatalf("live tokens = %d", len(live))
	}
	// Removed at the provider behind kluis's back.
	adapter, err := plaid.New(plaid.Options{ClientID: be.plaid.ClientID, Secret: be.plaid.Secret, BaseURL: be.plaid.URL})
	if err != nil {
		t.Fatal(err)
	}
	if err := adapter.RemoveItem(context.Background(), live[0]); err != nil {
		t.Fatal(err)
	}
	status, _, body := be.call(t, "DELETE", "/v1/items/"+it.ID, tok, "")
	want(t, status, 200, body, nil)
	if strings.TrimSpace(body) != `{"provider_revoked":false}` {
		t.Fatalf("delete body = %s", body)
	}
}

func TestTwoRotationsRacingOnOneItemMakeOneNewVersion(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_rotation_race")
	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	_, internal := be.internalItem(t, it.ID)
	dueForRotation(t, be)
	be.plaid.SetLatency(plaidtest.EndpointAccessTokenInvalidate, 20*time.Millisecond)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total banklink.RotationResult
	start := make(chan struct{})
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := be.svc.RotateAccessTokens(context.Background(), rotateAfter, 0)
			if err != nil {
				t.Errorf("rotation: %v", err)
			}
			mu.Lock()
			total.Rotated += res.Rotated
			total.Failed += res.Failed
			total.RelinkRequired += res.RelinkRequired
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	if total.Rotated != 1 || total.Failed != 0 || total.RelinkRequired != 0 {
		t.Fatalf("racing rotations = %+v, want exactly one rotation", total)
	}
	if got := be.plaid.Calls(plaidtest.EndpointAccessTokenInvalidate); got != 1 {
		t.Fatalf("%d rotations at Plaid, want 1", got)
	}
	if v := be.credentialVersion(t, internal.CredentialRef); v.Version != 2 || v.Pending {
		t.Fatalf("credential = %+v, want version 2", v)
	}
	_, sec := be.reveal(t, be.ServiceClient(t, "payments"), internal.CredentialRef)
	if _, ok := be.plaid.ItemByAccessToken(sec["access_token"]); !ok || be.itemStatus(t, it.ID) != "active" {
		t.Fatal("the item does not hold its live token")
	}
}

func TestScheduledRotationIsOffByDefault(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_rotation_off")
	be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	dueForRotation(t, be)
	// The default is config's: KLUIS_BANK_TOKEN_MAX_AGE unset.
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwks, []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(func(k string) string {
		switch k {
		case "KLUIS_DATABASE_URL":
			return "postgres://kluis@127.0.0.1:5432/kluis"
		case "KLUIS_JWT_JWKS_FILE":
			return jwks
		case "KLUIS_JWT_ISSUER":
			return "https://idp.example/"
		case "KLUIS_LOCAL_KEK_FILE":
			return filepath.Join(filepath.Dir(jwks), "kek")
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := be.svc.RotateAccessTokens(context.Background(), cfg.BankTokenMaxAge, 0); err != nil || res != (banklink.RotationResult{}) {
		t.Fatalf("rotation with the default max age = %+v, %v; want nothing", res, err)
	}
	if got := be.plaid.Calls(plaidtest.EndpointAccessTokenInvalidate); got != 0 {
		t.Fatalf("%d rotations at Plaid, want none", got)
	}
}

func TestUserPermissionRevokedRevokesTheItemItsTokenAndItsNumbers(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_permission_revoked")
	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	pid := providerItemID(t, be, it.ID)
	_, internal := be.internalItem(t, it.ID)
	w := be.plaid.FireWebhook(pid, "ITEM", "USER_PERMISSION_REVOKED", nil)
	status, body := be.webhookPost(t, "plaid", w.Header, w.Body)
	want(t, status, 200, body, nil)

	status, _, body = be.call(t, "GET", "/v1/items/"+it.ID, tok, "")
	var got itemBody
	want(t, status, 200, body, &got)
	if got.Status != "revoked" {
		t.Fatalf("item is %s, want revoked", got.Status)
	}
	if !strings.Contains(body, `"status":"revoked"`) || strings.Contains(body, `"verification_status":"verified"`) {
		t.Fatalf("item after revocation = %s", body)
	}
	status, body = be.revealRaw(t, internal.CredentialRef)
	mustErrorReason(t, status, body, 410, "gone", "credential_revoked")
	for _, a := range internal.Accounts {
		status, body = be.revealRaw(t, *a.AccountNumberRef)
		mustErrorReason(t, status, body, 410, "gone", "credential_revoked")
	}
	// Through the owner routes too: the tombstone keeps its owner, and the
	// answer is the same 410, never 404 or 500.
	status, _, body = be.revealAt(t, "payments", "items/"+it.ID)
	mustErrorReason(t, status, body, 410, "gone", "credential_revoked")
	for _, a := range internal.Accounts {
		status, _, body = be.revealAt(t, "payments", "accounts/"+a.ID)
		mustErrorReason(t, status, body, 410, "gone", "credential_revoked")
	}
	if n := auditCount(t, be.Env, `action = 'credential.reveal' AND outcome = 'denied' AND details->>'reason' = 'credential revoked'`); n != 2*(1+len(internal.Accounts)) {
		t.Fatalf("refused reveals of revoked credentials audited %d times", n)
	}
	if be.outboxCount(t, "item.revoked", it.ID) != 1 {
		t.Fatal("no item.revoked event")
	}
	if _, ok := be.plaid.Item(pid); ok {
		t.Fatal("the item is still at Plaid: kluis did not remove it where it could")
	}
	if n := auditCount(t, be.Env, `action = 'item.revoked' AND target = $1 AND details->>'provider_revoked' = 'true'`, it.ID); n != 1 {
		t.Fatalf("item.revoked audited %d times", n)
	}
	// Nothing of the token is left in the database.
	var envelopes int
	_ = be.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM credentials WHERE ref = $1 AND envelope IS NOT NULL`, internal.CredentialRef).Scan(&envelopes)
	if envelopes != 0 {
		t.Fatal("the revoked token's envelope is still stored")
	}
	// Unlinking the revoked item: the provider's side is revoked already.
	status, _, body = be.call(t, "DELETE", "/v1/items/"+it.ID, tok, "")
	want(t, status, 204, body, nil)
}

func TestUserAccountRevokedRevokesThatAccountOnly(t *testing.T) {
	be := startBank(t, false)
	tok := userToken(t, "user_account_revoked")
	it := be.linkSandbox(t, tok, sandbox.InstitutionAuth)
	_, internal := be.internalItem(t, it.ID)
	gone, kept := internal.Accounts[0], internal.Accounts[1]
	status, _, body := be.call(t, "POST", "/v1/sandbox/items/"+it.ID+"/fire-webhook", tok,
		`{"code":"USER_ACCOUNT_REVOKED","account_id":"`+gone.ID+`"}`)
	want(t, status, 200, body, nil)
	if !strings.Contains(body, `"outcome":"applied"`) {
		t.Fatalf("webhook outcome = %s", body)
	}
	status, _, body = be.call(t, "GET", "/v1/accounts/"+gone.ID, tok, "")
	var acct struct {
		accountBody
		Status string `json:"status"`
	}
	want(t, status, 200, body, &acct)
	if acct.Status != "revoked" || acct.VerificationStatus != "unverified" {
		t.Fatalf("revoked account = %s", body)
	}
	status, body = be.revealRaw(t, *gone.AccountNumberRef)
	mustErrorReason(t, status, body, 410, "gone", "credential_revoked")
	status, _, body = be.revealAt(t, "payments", "accounts/"+gone.ID)
	mustErrorReason(t, status, body, 410, "gone", "credential_revoked")
	if status, _ := be.revealRaw(t, *kept.AccountNumberRef); status != 200 {
		t.Fatalf("the other account's number = %d, want 200", status)
	}
	if status, got, body := be.revealAt(t, "payments", "accounts/"+kept.ID); status != 200 || got.Owner.ID != kept.ID {
		t.Fatalf("the other account's number through its route = %d %s", status, body)
	}
	if status, _ := be.revealRaw(t, internal.CredentialRef); status != 200 || be.itemStatus(t, it.ID) != "active" {
		t.Fatalf("the item's token = %d and status %s, want 200 and active", status, be.itemStatus(t, it.ID))
	}
	if be.outboxCount(t, "item.revoked", it.ID) != 1 {
		t.Fatal("no item.revoked event")
	}
}

func TestARevokedAccountCannotBeVerifiedAgain(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_revoked_verify")
	status, body := ve.call(t, "POST", "/v1/link/sessions", tok, `{"products":["auth"]}`)
	var s sessionBody
	want(t, status, 201, body, &s)
	status, body = ve.call(t, "POST", "/v1/sandbox/public-token", tok, fmt.Sprintf(
		`{"link_session_id":%q,"institution_id":%q,"username":"user_good","password":"pass_good"}`, s.ID, sandbox.InstitutionAuth))
	var pt struct {
		PublicToken string `json:"public_token"`
	}
	want(t, status, 201, body, &pt)
	status, body = ve.call(t, "POST", "/v1/link/sessions/"+s.ID+"/exchange", tok, fmt.Sprintf(`{"public_token":%q}`, pt.PublicToken))
	var out struct {
		Item itemBody `json:"item"`
	}
	want(t, status, 201, body, &out)
	acct := out.Item.Accounts[0].ID
	status, body = ve.call(t, "POST", "/v1/sandbox/items/"+out.Item.ID+"/fire-webhook", tok,
		`{"code":"USER_ACCOUNT_REVOKED","account_id":"`+acct+`"}`)
	want(t, status, 200, body, nil)
	status, body = ve.call(t, "POST", "/v1/accounts/"+acct+"/verifications", tok, `{"method":"auto"}`)
	mustError(t, status, body, 409, "conflict")
}

func TestSandboxUserPermissionRevokedAnswers410ForTheToken(t *testing.T) {
	be := startBank(t, false)
	tok := userToken(t, "user_sandbox_revoked")
	it := be.linkSandbox(t, tok, sandbox.InstitutionAuth)
	_, internal := be.internalItem(t, it.ID)
	status, _, body := be.call(t, "POST", "/v1/sandbox/items/"+it.ID+"/fire-webhook", tok, `{"code":"USER_PERMISSION_REVOKED"}`)
	want(t, status, 200, body, nil)
	status, body = be.revealRaw(t, internal.CredentialRef)
	mustErrorReason(t, status, body, 410, "gone", "credential_revoked")
	status, _, body = be.call(t, "GET", "/v1/accounts", tok, "")
	if status != 200 || strings.Contains(body, `"status":"active"`) {
		t.Fatalf("accounts after revocation = %d %s", status, body)
	}
}

// legacyPending leaves the item as a rotation by the kluis before stable
// refs left it when its switch failed: Plaid rotated (the current token is
// dead), the live successor sealed under a ref of its own in
// items.pending_credential_ref.
func legacyPending(t *testing.T, be *bankEnv, sub, itemID string) (string, string) {
	t.Helper()
	ctx := context.Background()
	_, internal := be.internalItem(t, itemID)
	_, sec := be.reveal(t, be.ServiceClient(t, "payments"), internal.CredentialRef)
	adapter, err := plaid.New(plaid.Options{ClientID: be.plaid.ClientID, Secret: be.plaid.Secret, BaseURL: be.plaid.URL})
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := adapter.RotateAccessToken(ctx, sec["access_token"])
	if err != nil {
		t.Fatal(err)
	}
	sid, err := vault.LookupSubject(ctx, be.DB.Pool, sub)
	if err != nil {
		t.Fatal(err)
	}
	var ref string
	err = be.DB.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		ref, err = be.Store.Seal(ctx, tx, vault.ItemOwner(itemID), sid, banklink.KindAccessToken, []byte(`{"access_token":"`+fresh+`","provider":"plaid"}`), "")
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE items SET pending_credential_ref = $2 WHERE id = $1`, itemID, ref)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ref, fresh
}

func TestALegacyPendingTokenIsRevokedOnDeleteAndAdoptedUnderTheSameRefByRotation(t *testing.T) {
	be := startBank(t, true)
	const sub = "user_legacy_pending"
	tok := userToken(t, sub)

	t.Run("delete revokes with the legacy pending token: the item is gone at Plaid", func(t *testing.T) {
		it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
		pid := providerItemID(t, be, it.ID)
		legacyRef, _ := legacyPending(t, be, sub, it.ID)
		status, _, body := be.call(t, "DELETE", "/v1/items/"+it.ID, tok, "")
		want(t, status, 204, body, nil)
		if _, ok := be.plaid.Item(pid); ok || len(be.plaid.LiveTokens(pid)) != 0 {
			t.Fatal("the legacy pending token is still live at Plaid")
		}
		if status, _ := be.revealRaw(t, legacyRef); status != 404 {
			t.Fatalf("legacy pending credential reveal = %d, want 404", status)
		}
	})
	t.Run("the next rotation run adopts it as the pending version of the item's ref and switches", func(t *testing.T) {
		it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
		_, internal := be.internalItem(t, it.ID)
		legacyRef, fresh := legacyPending(t, be, sub, it.ID)
		res, err := be.svc.RotateAccessTokens(context.Background(), 0, 0)
		if err != nil || res.Finished != 1 {
			t.Fatalf("run = %+v, %v; want the legacy switch finished", res, err)
		}
		_, sec := be.reveal(t, be.ServiceClient(t, "payments"), internal.CredentialRef)
		if sec["access_token"] != fresh {
			t.Fatal("the item's ref does not reveal the live token")
		}
		if status, _ := be.revealRaw(t, legacyRef); status != 404 {
			t.Fatalf("legacy pending credential reveal = %d, want 404", status)
		}
	})
}

func TestUpdateModeWithATokenTheProviderNoLongerKnowsMakesTheItemRelinkRequired(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_update_dead")
	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	live := be.plaid.LiveTokens(providerItemID(t, be, it.ID))
	adapter, err := plaid.New(plaid.Options{ClientID: be.plaid.ClientID, Secret: be.plaid.Secret, BaseURL: be.plaid.URL})
	if err != nil {
		t.Fatal(err)
	}
	if err := adapter.RemoveItem(context.Background(), live[0]); err != nil {
		t.Fatal(err)
	}
	status, _, body := be.call(t, "POST", "/v1/link/sessions", tok, `{"products":["auth"],"item_id":"`+it.ID+`"}`)
	mustError(t, status, body, 422, "invalid_token")
	if got := be.itemStatus(t, it.ID); got != "relink_required" {
		t.Fatalf("item is %s, want relink_required", got)
	}
	if be.outboxCount(t, "item.relink_required", it.ID) != 1 {
		t.Fatal("no item.relink_required event")
	}
}

func TestARotationRacingADeleteLeavesNothingLiveAtTheProvider(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_rotation_delete_race")
	var items []itemBody
	for range 4 {
		items = append(items, be.linkPlaid(t, tok, plaidtest.InstitutionAuth))
	}
	dueForRotation(t, be)
	be.plaid.SetLatency(plaidtest.EndpointAccessTokenInvalidate, 10*time.Millisecond)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := be.svc.RotateAccessTokens(context.Background(), rotateAfter, 0); err != nil {
			t.Errorf("rotation: %v", err)
		}
	}()
	for _, it := range items {
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			for {
				status, _, body := be.call(t, "DELETE", "/v1/items/"+id, tok, "")
				if status == 409 { // a rotation holds the item's token: try again
					time.Sleep(5 * time.Millisecond)
					continue
				}
				if status != 204 {
					t.Errorf("delete = %d %s, want 204", status, body)
				}
				return
			}
		}(it.ID)
	}
	wg.Wait()
	for _, it := range items {
		if live := be.plaid.LiveTokens(providerItemID(t, be, it.ID)); len(live) != 0 {
			t.Fatalf("item %s has %d live tokens at Plaid after its delete", it.ID, len(live))
		}
	}
}
