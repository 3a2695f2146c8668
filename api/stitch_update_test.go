package api_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// credRef reads the item's credential_ref.
func (se *stitchEnv) credRef(t *testing.T, itemID string) string {
	t.Helper()
	var ref string
	if err := se.DB.Pool.QueryRow(context.Background(), `SELECT credential_ref FROM items WHERE id = $1`, itemID).Scan(&ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

// reauthorize runs update mode for the item: a session naming it, the
// item's Stitch user at the authorize URL again, the callback, the
// exchange (201, as every first exchange of a session answers).
func (se *stitchEnv) reauthorize(t *testing.T, tok, itemID string) itemBody {
	t.Helper()
	s, provider := se.sessionWith(t, tok, `{"item_id":"`+itemID+`"}`)
	if provider != "stitch" || !strings.HasPrefix(s.LinkToken, se.srv.URL+"/connect/authorize?") {
		t.Fatalf("update mode: provider %q, link token is not Stitch's authorize URL", provider)
	}
	redirect, err := se.srv.Reauthorize(s.LinkToken, providerItemID(t, se.bankEnv, itemID))
	if err != nil {
		t.Fatal(err)
	}
	status, body := se.callback(t, redirect)
	var cb struct {
		PublicToken string `json:"public_token"`
	}
	want(t, status, 200, body, &cb)
	return se.exchange(t, tok, s.ID, cb.PublicToken, 201)
}

// TestStitchUpdateModeRepairsAnItemWithANewTokenPairUnderTheSameRef: an
// item whose bank asks the user to authorize again (login_required), or
// whose token kluis lost (relink_required), is repaired by a link session
// in update mode: Stitch's OAuth again, the new pair sealed as the next
// version of the same credential_ref, the item active with an
// item.repaired event, and the revealed token the new grant's.
func TestStitchUpdateModeRepairsAnItemWithANewTokenPairUnderTheSameRef(t *testing.T) {
	for _, tc := range []struct {
		name, from string
		fault      func(se *stitchEnv, itemID string)
	}{
		{"the bank asks the user to authorize again", "login_required", func(se *stitchEnv, itemID string) {
			user := providerItemID(t, se.bankEnv, itemID)
			se.srv.SetReauthRequired(user, true)
			hook := se.srv.ReauthorizationWebhook(user)
			if status, body := se.webhookPost(t, "stitch", hook.Header, hook.Body); status != 200 {
				t.Fatalf("webhook: %d %s", status, body)
			}
		}},
		{"kluis lost the token (an answer lost)", "relink_required", func(se *stitchEnv, itemID string) {
			se.clock.Advance(14 * time.Minute)
			se.srv.LoseRefreshAnswers(1)
			status, _, body := se.revealItem(t, itemID)
			mustError(t, status, body, 409, "item_relink_required")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			se := startStitch(t)
			tok := userToken(t, "user_stitch_update")
			it := se.linkStitch(t, tok)
			ref := se.credRef(t, it.ID)
			before := se.credentialVersion(t, ref)
			_, old, _ := se.revealItem(t, it.ID)
			tc.fault(se, it.ID)
			if got := se.itemStatus(t, it.ID); got != tc.from {
				t.Fatalf("item status = %q, want %q", got, tc.from)
			}

			// A lost answer is retried with the same refresh token on
			// purpose: reuses count from here.
			reuses := se.srv.RefreshReuses()
			fixed := se.reauthorize(t, tok, it.ID)
			if fixed.ID != it.ID || fixed.Status != "active" || len(fixed.Accounts) != 2 {
				t.Fatalf("after update mode: %+v", fixed)
			}
			if se.credRef(t, it.ID) != ref {
				t.Fatal("update mode changed the item's credential_ref")
			}
			if v := se.credentialVersion(t, ref); v.Version <= before.Version || v.Pending {
				t.Fatalf("credential version %d → %+v", before.Version, v)
			}
			if se.outboxCount(t, "item.repaired", it.ID) != 1 {
				t.Fatal("no item.repaired event")
			}
			if n := countWhere(t, se.Env, `SELECT count(*) FROM audit_entries WHERE action = 'item.reauthorized' AND target = $1`, it.ID); n != 1 {
				t.Fatalf("%d item.reauthorized entries", n)
			}
			status, fresh, body := se.revealItem(t, it.ID)
			if status != 200 || fresh["access_token"] == old["access_token"] {
				t.Fatalf("reveal after update mode: %d %s", status, body)
			}
			if _, ok := se.srv.UserOf(fresh["access_token"]); !ok {
				t.Fatal("the revealed token is not a live Stitch token")
			}
			// The new pair renews like any other.
			se.clock.Advance(14 * time.Minute)
			if status, again, _ := se.revealItem(t, it.ID); status != 200 || again["access_token"] == fresh["access_token"] {
				t.Fatal("the re-authorized pair does not renew")
			}
			if se.srv.RefreshReuses() != reuses {
				t.Fatal("a refresh token was spent twice after the re-authorization")
			}
		})
	}

	t.Run("another bank user's authorization is refused and revoked", func(t *testing.T) {
		se := startStitch(t)
		tok := userToken(t, "user_stitch_update_other")
		it := se.linkStitch(t, tok)
		s, _ := se.sessionWith(t, tok, `{"item_id":"`+it.ID+`"}`)
		redirect, err := se.srv.Authorize(s.LinkToken) // a new Stitch user
		if err != nil {
			t.Fatal(err)
		}
		status, body := se.callback(t, redirect)
		var cb struct {
			PublicToken string `json:"public_token"`
		}
		want(t, status, 200, body, &cb)
		status, _, body = se.call(t, "POST", "/v1/link/sessions/"+s.ID+"/exchange", tok, `{"public_token":"`+cb.PublicToken+`"}`)
		mustError(t, status, body, 409, "conflict")
		if se.itemStatus(t, it.ID) != "active" || se.outboxCount(t, "item.repaired", it.ID) != 0 {
			t.Fatal("a foreign authorization changed the item")
		}
		if status, _, _ := se.revealItem(t, it.ID); status != 200 {
			t.Fatal("the item's own token stopped working")
		}
	})
}

// TestAnIdleStitchRefreshTokenIsRenewedByTheKeepAliveJob: Stitch's refresh
// tokens die after 365 days unused. An item nobody revealed for longer than
// KLUIS_STITCH_KEEPALIVE_AFTER is renewed by the job (one refresh, the
// same single-use path as a reveal), and lives on past the year; an item
// the job did not reach is found dead and becomes relink_required.
func TestAnIdleStitchRefreshTokenIsRenewedByTheKeepAliveJob(t *testing.T) {
	const idle = 335 * 24 * time.Hour
	se := startStitch(t)
	tok := userToken(t, "user_stitch_keepalive")
	it := se.linkStitch(t, tok)
	ctx := context.Background()

	if res, err := se.svc.KeepAliveTokens(ctx, idle, 0); err != nil || res.Renewed != 0 {
		t.Fatalf("a fresh item was renewed: %+v %v", res, err)
	}
	se.clock.Advance(340 * 24 * time.Hour)
	res, err := se.svc.KeepAliveTokens(ctx, idle, 0)
	if err != nil || res.Renewed != 1 || res.Failed != 0 || res.LoginRequired != 0 || se.srv.Refreshes() != 1 {
		t.Fatalf("keep-alive: %+v %v (%d refreshes)", res, err, se.srv.Refreshes())
	}
	// The renewed token was used once: a token refreshed but unused for a
	// year would meet a reauthorization error at its next use.
	if used := se.srv.LastUsed(providerItemID(t, se.bankEnv, it.ID)); se.clock.Now().Sub(used) > time.Hour {
		t.Fatal("the keep-alive did not use the renewed token")
	}
	if res, err := se.svc.KeepAliveTokens(ctx, idle, 0); err != nil || res.Renewed != 0 {
		t.Fatalf("a renewed item was renewed again: %+v %v", res, err)
	}
	se.clock.Advance(340 * 24 * time.Hour) // 680 days after the link
	status, secret, body := se.revealItem(t, it.ID)
	if status != 200 || se.itemStatus(t, it.ID) != "active" {
		t.Fatalf("reveal after the keep-alive: %d %s", status, body)
	}
	if _, ok := se.srv.UserOf(secret["access_token"]); !ok {
		t.Fatal("the revealed token does not work at Stitch")
	}

	t.Run("a bank that asks the user to authorize again makes it login_required", func(t *testing.T) {
		asks := se.linkStitch(t, userToken(t, "user_stitch_keepalive_reauth"))
		se.clock.Advance(340 * 24 * time.Hour)
		se.srv.SetReauthRequired(providerItemID(t, se.bankEnv, asks.ID), true)
		res, err := se.svc.KeepAliveTokens(ctx, idle, 0)
		// (The first item, revealed but never used at Stitch for more
		// than a year, meets the same request for reauthorization.)
		if err != nil || res.LoginRequired < 1 || se.itemStatus(t, asks.ID) != "login_required" {
			t.Fatalf("keep-alive: %+v %v, item %s", res, err, se.itemStatus(t, asks.ID))
		}
		if se.outboxCount(t, "item.login_required", asks.ID) != 1 {
			t.Fatal("no item.login_required event")
		}
	})

	t.Run("without it the item dies at Stitch and is relink_required", func(t *testing.T) {
		other := se.linkStitch(t, userToken(t, "user_stitch_keepalive_none"))
		se.clock.Advance(366 * 24 * time.Hour)
		status, _, body := se.revealItem(t, other.ID)
		mustError(t, status, body, 409, "item_relink_required")
	})
}

// TestAStitchKeepAliveRacingRevealsSpendsOneRefreshTokenOnce races the keep-alive
// job on one instance with reveals on another, on an idle item whose user
// token has expired: exactly one refresh at Stitch, no refresh token
// presented twice, and every reveal gets the one new token.
func TestAStitchKeepAliveRacingRevealsSpendsOneRefreshTokenOnce(t *testing.T) {
	se := startStitch(t)
	it := se.linkStitch(t, userToken(t, "user_stitch_keepalive_race"))
	other := se.instance(t, se.deps, newStitch(t, se.srv, se.clock))
	se.clock.Advance(340 * 24 * time.Hour)

	const n = 8
	var wg sync.WaitGroup
	got := make([]string, n)
	errs := make([]error, n+1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, errs[n] = se.svc.KeepAliveTokens(context.Background(), 335*24*time.Hour, 0)
	}()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cred := se.credential(t, it.ID)
			defer cred.Zero()
			ss, err := other.ServiceCredential(context.Background(), cred)
			errs[i] = err
			got[i] = string(ss.Secret)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	for i := range n {
		if got[i] != got[0] {
			t.Fatal("two reveals got different tokens")
		}
	}
	if se.srv.Refreshes() != 1 || se.srv.RefreshReuses() != 0 {
		t.Fatalf("%d refreshes and %d reuses of a spent refresh token, want 1 and 0", se.srv.Refreshes(), se.srv.RefreshReuses())
	}
	if se.itemStatus(t, it.ID) != "active" {
		t.Fatal("the item is not active after the race")
	}
}
