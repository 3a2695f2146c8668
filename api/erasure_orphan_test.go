package api_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/compliance"
)

// startOrphanExchange starts an exchange for a subject with nothing else
// linked, lets the provider issue its token, approves the erasure, then
// lets the exchange go on with the provider refusing removals: its store
// is refused (subject_erasing) and kluis must revoke a token it does not
// hold. It returns the session id, the erasure request id and the
// exchange's answer to come.
func startOrphanExchange(t *testing.T, fe *fenceEnv, sub string) (string, string, chan rawAnswer) {
	t.Helper()
	tok := userToken(t, sub)
	s := fe.newSession(t, tok, "")
	pt := fe.sandboxPublicToken(t, tok, s.ID, "ins_sandbox")
	fe.gate.armed.Store(true)
	answer := make(chan rawAnswer, 1)
	go func() {
		answer <- fe.send("POST", "/v1/link/sessions/"+s.ID+"/exchange", tok, fmt.Sprintf(`{"public_token":%q}`, pt), "")
	}()
	<-fe.gate.entered
	id, status, got := fe.erase(t, sub)
	if status != 200 || got.Status != compliance.ErasureApproved {
		t.Fatalf("approve with an exchange in flight = %d %+v", status, got)
	}
	fe.gate.refuse.Store(true)
	close(fe.gate.release)
	return s.ID, id, answer
}

type unrevokedBody struct {
	Status         string                     `json:"status"`
	UnrevokedItems []compliance.UnrevokedItem `json:"unrevoked_items"`
	Receipt        *compliance.Receipt        `json:"receipt"`
}

// Issue 10, erasure fenced: a token kluis could not store, which the
// provider refuses to revoke for a while, keeps the erasure from
// shredding or completing; once the provider revokes it, the run completes
// with nothing live at the provider.
func TestAnUnstoredTokenTheProviderRefusesToRevokeHoldsTheErasureUntilItIsRevoked(t *testing.T) {
	fe := startFence(t)
	const sub = "user_orphan_retried"
	_, id, answer := startOrphanExchange(t, fe, sub)
	for fe.gate.removes.Load() < 2 { // the revoke is being retried
		time.Sleep(5 * time.Millisecond)
	}
	status, body := fe.approve(t, id)
	got := decode[erasureBody](t, body)
	if status != 200 || got.Status != compliance.ErasureApproved {
		t.Fatalf("a run while the unstored token is live = %d %s, want 200 approved", status, body)
	}
	if n := fe.count(t, `SELECT count(*) FROM erasure_requests WHERE id = $1 AND steps ? 'keys_destroyed'`, id); n != 0 {
		t.Fatal("the keys were shredded while a token was live at the provider")
	}
	if n := fe.liveAtProvider(t); n != 1 {
		t.Fatalf("live at the provider = %d, want the unstored token's item", n)
	}
	fe.gate.refuse.Store(false)
	mustErasing(t, "the exchange", <-answer)
	if n := fe.liveAtProvider(t); n != 0 {
		t.Fatalf("live at the provider after the exchange ended = %d, want 0", n)
	}
	status, body = fe.approve(t, id)
	done := decode[erasureBody](t, body)
	if status != 200 || done.Status != compliance.ErasureCompleted || done.Receipt == nil {
		t.Fatalf("the run after the revoke = %d %s, want completed", status, body)
	}
	if n := fe.count(t, `SELECT count(*) FROM audit_entries WHERE action = 'item.revoke_failed'`); n != 0 {
		t.Errorf("item.revoke_failed audited %d times for a token the provider revoked", n)
	}
}

// Issue 10: a token the provider never revokes within the bound is not
// forgotten: audited item.revoke_failed (never the token), the erasure ends
// needs_attention naming its link session, and only two staff can complete
// it, the receipt naming it.
func TestAnUnstoredTokenNeverRevokedLeavesTheErasureNeedsAttentionNamingIt(t *testing.T) {
	fe := startFence(t, func(o *banklink.Options) { o.OrphanRevokeFor = time.Second })
	const sub = "user_orphan_lost"
	session, id, answer := startOrphanExchange(t, fe, sub)
	mustErasing(t, "the exchange", <-answer)
	if n := fe.count(t, `SELECT count(*) FROM audit_entries WHERE action = 'item.revoke_failed' AND target = $1 AND outcome = 'failure'
		AND details->>'link_session' = $1 AND details->>'provider' = 'sandbox' AND details->>'provider_item_id' <> ''
		AND (SELECT count(*) FROM jsonb_object_keys(details)) = 4`, session); n != 1 {
		t.Fatalf("item.revoke_failed audited = %d, want 1 naming the session, provider and provider item", n)
	}
	var last unrevokedBody
	for i := 0; i < 2; i++ { // KLUIS_ERASURE_REVOKE_ATTEMPTS is 2 here
		status, body := fe.approve(t, id)
		if status != 200 {
			t.Fatalf("run %d = %d %s", i, status, body)
		}
		last = decode[unrevokedBody](t, body)
	}
	if last.Status != compliance.ErasureNeedsAttention || len(last.UnrevokedItems) != 1 ||
		last.UnrevokedItems[0].ItemID != session || last.UnrevokedItems[0].Reason != banklink.ReasonRevokeFailed {
		t.Fatalf("erasure = %+v, want needs_attention naming %s", last, session)
	}
	if n := fe.count(t, `SELECT count(*) FROM erasure_requests WHERE id = $1 AND steps ? 'keys_destroyed'`, id); n != 0 {
		t.Fatal("the keys were shredded with a token live at the provider")
	}
	console := fe.ServiceClient(t, "compliance-console")
	var done unrevokedBody
	for _, who := range []string{"staff_a", "staff_b"} {
		status, _, body := apitest.Do(t, console, "POST", fe.Internal.URL+"/compliance/v1/erasure-requests/"+id+"/complete", staff(t, who), "", "")
		if status != 200 {
			t.Fatalf("complete by %s = %d %s", who, status, body)
		}
		done = decode[unrevokedBody](t, body)
	}
	if done.Status != compliance.ErasureCompletedWithExceptions || done.Receipt == nil ||
		len(done.Receipt.UnrevokedItems) != 1 || done.Receipt.UnrevokedItems[0].ItemID != session {
		t.Fatalf("completed = %+v, want completed_with_exceptions naming %s", done, session)
	}
}

// Issue 10: an erasure approved while a rotation talks to the provider
// refuses the pending seal (an update, which the database's fence does not
// see): the fresh token is revoked, the item is relink_required, never
// active with a token sealed for an erasing subject, and the run completes
// with nothing live at the provider.
func TestAnErasureApprovedMidRotationRefusesThePendingSeal(t *testing.T) {
	fe := startFence(t)
	const sub = "user_rotated_while_erased"
	tok := userToken(t, sub)
	it := fe.linkSandbox(t, tok, "ins_sandbox")
	dueForRotation(t, fe.bankEnv)
	var id string
	hook := func() { id, _, _ = fe.erase(t, sub) }
	fe.gate.onRotate.Store(&hook)
	_, _ = fe.svc.RotateAccessTokens(context.Background(), time.Hour, 0)
	if id == "" {
		t.Fatal("the rotation did not reach the provider")
	}
	var status string
	if err := fe.DB.Pool.QueryRow(context.Background(), `SELECT status FROM items WHERE id = $1`, it.ID).Scan(&status); err != nil {
		t.Fatal(err)
	}
	if status != banklink.ItemRelinkRequired {
		t.Fatalf("item after a rotation refused its seal = %s, want %s", status, banklink.ItemRelinkRequired)
	}
	if n := fe.liveAtProvider(t); n != 0 {
		t.Fatalf("live at the provider = %d, want 0 (the fresh token revoked)", n)
	}
	code, body := fe.approve(t, id)
	if done := decode[erasureBody](t, body); code != 200 || done.Status != compliance.ErasureCompleted {
		t.Fatalf("the run after the rotation = %d %s, want completed", code, body)
	}
}
