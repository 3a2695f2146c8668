package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// hostedStitchItem links an item through the hosted Stitch step (popup):
// the page, Stitch, the callback in the page's browser, the app's exchange.
func (he *hostedEnv) hostedStitchItem(t *testing.T, tok string) itemBody {
	t.Helper()
	id, to, ck := he.oauthPage(t, tok, "popup", `{"products":["auth"],"provider":"stitch"}`)
	back, err := he.stitch.Authorize(to)
	if err != nil {
		t.Fatal(err)
	}
	if status, _, body := he.callback(t, back, ck); status != 200 || !strings.Contains(body, `data-handoff="success"`) {
		t.Fatalf("the callback: %d\n%s", status, body)
	}
	return he.exchangeSession(t, tok, id, 201)
}

// exchangeSession exchanges the public token the session's hosted page
// handed over (read back as the app's server does) and expects status.
func (he *hostedEnv) exchangeSession(t *testing.T, tok, id string, status int) itemBody {
	t.Helper()
	st, _, resp := he.do(t, "GET", "/v1/link/sessions/"+id, tok, "", "", nil)
	var s struct {
		Status      string `json:"status"`
		PublicToken string `json:"public_token"`
	}
	want(t, st, 200, resp, &s)
	if s.Status != "succeeded" || s.PublicToken == "" {
		t.Fatalf("session %s: %+v", id, s)
	}
	st, _, resp = he.do(t, "POST", "/v1/link/sessions/"+id+"/exchange", tok, "application/json", `{"public_token":"`+s.PublicToken+`"}`, nil)
	var ex struct {
		Item itemBody `json:"item"`
	}
	if status != 201 {
		if st != status {
			t.Fatalf("exchange: %d, want %d: %s", st, status, resp)
		}
		return itemBody{}
	}
	want(t, st, 201, resp, &ex)
	return ex.Item
}

// TestTheHostedStitchStepRepairsAnItemInUpdateModeUnderTheSameRef: a link
// session in update mode for a Stitch item whose bank asks the user to
// authorize again (login_required) or whose token kluis lost
// (relink_required), opened through its hosted_link_url, sends the browser
// to Stitch's authorize page again; the user's return ends on the done
// page (in that browser only), which hands the app the public token, and
// the app's exchange repairs the item under the same credential_ref. A
// different bank login authorized at Stitch is refused and changes
// nothing.
func TestTheHostedStitchStepRepairsAnItemInUpdateModeUnderTheSameRef(t *testing.T) {
	for _, tc := range []struct {
		name, from, mode string
		fault            func(t *testing.T, he *hostedEnv, user string)
	}{
		{"the bank asks the user to authorize again", "login_required", "popup", func(t *testing.T, he *hostedEnv, user string) {
			he.stitch.SetReauthRequired(user, true)
			hook := he.stitch.ReauthorizationWebhook(user)
			hdr := hook.Header.Clone()
			if status, _, body := he.do(t, "POST", "/webhooks/stitch", "", "application/json", string(hook.Body), hdr); status != 200 {
				t.Fatalf("webhook: %d %s", status, body)
			}
		}},
		{"kluis lost the token", "relink_required", "redirect", func(t *testing.T, he *hostedEnv, _ string) {
			// The keep-alive's refresh reaches Stitch, its answer is lost:
			// the refresh token is spent and kluis holds no live one.
			he.stitch.LoseRefreshAnswers(1)
			if _, err := he.Deps.BankLink.KeepAliveTokens(context.Background(), time.Nanosecond, 0); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			he := startHosted(t, "127.0.0.1", "https://app.example.com")
			be := &bankEnv{Env: he.Env}
			tok := userToken(t, "user-hosted-stitch-update-"+tc.from)
			it := he.hostedStitchItem(t, tok)
			user := providerItemID(t, be, it.ID)
			ref := credRefOf(t, be, it.ID)
			before := be.credentialVersion(t, ref)
			tc.fault(t, he, user)
			if got := be.itemStatus(t, it.ID); got != tc.from {
				t.Fatalf("item status = %q, want %q", got, tc.from)
			}

			body := `{"item_id":"` + it.ID + `"}`
			if tc.mode == "redirect" {
				body = `{"item_id":"` + it.ID + `","redirect_uri":"https://app.example.com/back"}`
			}
			id, to, ck := he.oauthPage(t, tok, tc.mode, body)
			back, err := he.stitch.Reauthorize(to, user)
			if err != nil {
				t.Fatal(err)
			}
			// Another browser (no cookie) is refused, and nothing changes.
			if status, _, _ := he.callback(t, back); status != 403 || he.sessionStatus(t, id) != "created" {
				t.Fatalf("a callback without the page's cookie: %d, session %s", status, he.sessionStatus(t, id))
			}
			status, h, page := he.callback(t, back, ck)
			if tc.mode == "redirect" {
				if loc := h.Get("Location"); status != http.StatusSeeOther || !strings.HasPrefix(loc, "https://app.example.com/back?") ||
					!strings.Contains(loc, "kluis_link_session_id="+id) || strings.Contains(loc, "token") {
					t.Fatalf("the redirect back: %d %q", status, loc)
				}
			} else if status != 200 || !strings.Contains(page, `data-handoff="success"`) || !strings.Contains(page, "Bank reconnected") {
				t.Fatalf("the done page: %d\n%s", status, page)
			}

			fixed := he.exchangeSession(t, tok, id, 201)
			if fixed.ID != it.ID || fixed.Status != "active" || len(fixed.Accounts) != len(it.Accounts) {
				t.Fatalf("after update mode: %+v", fixed)
			}
			if credRefOf(t, be, it.ID) != ref {
				t.Fatal("update mode changed the item's credential_ref")
			}
			if v := be.credentialVersion(t, ref); v.Version <= before.Version || v.Pending {
				t.Fatalf("credential version %d → %+v", before.Version, v)
			}
			if be.outboxCount(t, "item.repaired", it.ID) != 1 {
				t.Fatal("no item.repaired event")
			}
			if n := countWhere(t, he.Env, `SELECT count(*) FROM audit_entries WHERE action = 'item.reauthorized' AND target = $1`, it.ID); n != 1 {
				t.Fatalf("%d item.reauthorized entries", n)
			}
			if n := countWhere(t, he.Env, `SELECT count(*) FROM items
				WHERE subject_id = (SELECT subject_id FROM items WHERE id = $1)`, it.ID); n != 1 {
				t.Fatalf("update mode left %d items, want the one repaired", n)
			}
		})
	}

	t.Run("another bank login authorized at Stitch is refused", func(t *testing.T) {
		he := startHosted(t, "127.0.0.1", "https://app.example.com")
		be := &bankEnv{Env: he.Env}
		tok := userToken(t, "user-hosted-stitch-update-other")
		it := he.hostedStitchItem(t, tok)
		user := providerItemID(t, be, it.ID)
		he.stitch.SetReauthRequired(user, true)
		hook := he.stitch.ReauthorizationWebhook(user)
		if status, _, body := he.do(t, "POST", "/webhooks/stitch", "", "application/json", string(hook.Body), hook.Header.Clone()); status != 200 {
			t.Fatalf("webhook: %d %s", status, body)
		}
		id, to, ck := he.oauthPage(t, tok, "popup", `{"item_id":"`+it.ID+`"}`)
		back, err := he.stitch.Authorize(to) // a new Stitch user
		if err != nil {
			t.Fatal(err)
		}
		if status, _, _ := he.callback(t, back, ck); status != 200 {
			t.Fatalf("the callback: %d", status)
		}
		he.exchangeSession(t, tok, id, 409)
		if be.itemStatus(t, it.ID) != "login_required" || be.outboxCount(t, "item.repaired", it.ID) != 0 {
			t.Fatal("a foreign authorization changed the item")
		}
	})
}

// credRefOf reads the item's credential_ref.
func credRefOf(t *testing.T, be *bankEnv, itemID string) string {
	t.Helper()
	var ref string
	if err := be.DB.Pool.QueryRow(context.Background(), `SELECT credential_ref FROM items WHERE id = $1`, itemID).Scan(&ref); err != nil {
		t.Fatal(err)
	}
	return ref
}
