package api_test

import (
	"context"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/stitch"
	"github.com/kluis-dev/kluis/banklink/stitch/stitchtest"
	"github.com/kluis-dev/kluis/vault"
)

const stitchRedirect = "https://kluis.test/link/callback/stitch"

// stitchEnv is kluis with the Stitch adapter against the in-test Stitch,
// under a clock the test moves (both sides read it).
type stitchEnv struct {
	*bankEnv
	srv   *stitchtest.Server
	clock *testClock
	deps  *api.Deps
}

func newStitch(t *testing.T, srv *stitchtest.Server, clock kluis.Clock) *stitch.Provider {
	t.Helper()
	p, err := stitch.New(stitch.Options{ClientID: stitchtest.ClientID, ClientSecret: stitchtest.ClientSecret,
		BaseURL: srv.URL, AuthURL: srv.URL, RedirectURI: stitchRedirect, WebhookSecret: stitchtest.WebhookSecret, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startStitch starts one kluis whose only bank provider is Stitch.
func startStitch(t *testing.T) *stitchEnv {
	t.Helper()
	se := &stitchEnv{clock: &testClock{}, bankEnv: &bankEnv{}}
	se.srv = stitchtest.NewServer(t, stitchtest.WithClock(se.clock))
	se.srv.RegisterRedirect(stitchRedirect)
	se.Env = apitest.Start(t, func(d *api.Deps) {
		se.deps = d
		se.svc, d.BankLink = se.instance(t, d, newStitch(t, se.srv, se.clock)), nil
		d.BankLink = se.svc
	})
	return se
}

// instance is one more kluis's bank linking over the same database: what a
// second instance behind the load balancer runs.
func (se *stitchEnv) instance(t *testing.T, d *api.Deps, p banklink.Provider) *banklink.Service {
	t.Helper()
	svc, err := banklink.New(banklink.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Provider: p,
		Keys: d.Pseudonyms.(*vault.SystemKeys), Logger: d.Logger, Clock: se.clock})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// callback follows Stitch's redirect to kluis's callback route.
func (se *stitchEnv) callback(t *testing.T, redirect string) (int, string) {
	t.Helper()
	u, err := url.Parse(redirect)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(redirect, stitchRedirect+"?") {
		t.Fatalf("Stitch redirected to %q, not kluis's callback", u.Host+u.Path)
	}
	status, _, body := se.call(t, "GET", "/link/callback/stitch?"+u.RawQuery, "", "")
	return status, body
}

// linkStitch links an account through Stitch: a session, the user at the
// authorize URL (its link token), the callback, the exchange.
func (se *stitchEnv) linkStitch(t *testing.T, tok string) itemBody {
	t.Helper()
	s, provider := se.sessionWith(t, tok, `{"products":["auth"],"provider":"stitch"}`)
	if provider != "stitch" || !strings.HasPrefix(s.LinkToken, se.srv.URL+"/connect/authorize?") {
		t.Fatalf("session provider %q, link token is not Stitch's authorize URL", provider)
	}
	redirect, err := se.srv.Authorize(s.LinkToken)
	if err != nil {
		t.Fatal(err)
	}
	status, body := se.callback(t, redirect)
	var cb struct {
		LinkSessionID string `json:"link_session_id"`
		Status        string `json:"status"`
		PublicToken   string `json:"public_token"`
	}
	want(t, status, 200, body, &cb)
	if cb.LinkSessionID != s.ID || cb.Status != "succeeded" || cb.PublicToken == "" {
		t.Fatalf("callback = %+v", cb)
	}
	return se.exchange(t, tok, s.ID, cb.PublicToken, 201)
}

// revealItem reveals the item's token as the payments service.
func (se *stitchEnv) revealItem(t *testing.T, itemID string) (int, map[string]string, string) {
	t.Helper()
	status, _, body := apitest.Do(t, se.ServiceClient(t, "payments"), "POST",
		se.Internal.URL+"/internal/v1/items/"+itemID+"/reveal", "", "application/json", `{"purpose":"payment_initiation"}`)
	var out struct {
		Secret map[string]string `json:"secret"`
	}
	if status == 200 {
		want(t, status, 200, body, &out)
	}
	return status, out.Secret, body
}

// credential opens the item's credential as the reveal route does.
func (se *stitchEnv) credential(t *testing.T, itemID string) vault.Credential {
	t.Helper()
	ref, err := se.svc.OwnerCredential(context.Background(), vault.ItemOwner(itemID))
	if err != nil {
		t.Fatal(err)
	}
	cred, err := se.Store.OpenOwned(context.Background(), vault.ItemOwner(itemID), ref)
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

// TestAnAccountLinkedThroughStitchIsRevealedAsAServiceWithAFreshUserToken is
// issue 15's first done-when: link through the Stitch test server, reveal
// the item's token as a service (the user token alone, with expires_at),
// renewed when near its expiry; the refresh token never leaves kluis.
func TestAnAccountLinkedThroughStitchIsRevealedAsAServiceWithAFreshUserToken(t *testing.T) {
	se := startStitch(t)
	tok := userToken(t, "user_stitch_1")
	it := se.linkStitch(t, tok)
	if it.Status != "active" || it.Institution.ID != "za_absa" || len(it.Accounts) != 2 {
		t.Fatalf("item = %+v", it)
	}

	status, secret, body := se.revealItem(t, it.ID)
	if status != 200 {
		t.Fatalf("reveal: %d %s", status, body)
	}
	if _, ok := se.srv.UserOf(secret["access_token"]); !ok || secret["provider"] != "stitch" {
		t.Fatalf("the revealed token is not a live Stitch user token (provider %q)", secret["provider"])
	}
	exp, err := time.Parse(time.RFC3339, secret["expires_at"])
	if err != nil || exp.Sub(se.clock.Now()) < 10*time.Minute {
		t.Fatalf("expires_at = %q, want about 15 minutes from now", secret["expires_at"])
	}
	if strings.Contains(body, "stitch-rt-") || strings.Contains(body, "stitch-v1.") || len(secret) != 3 {
		t.Fatalf("the reveal carries more than the user token: %v", keysOf(secret))
	}

	t.Run("a token far from its expiry is revealed as it is", func(t *testing.T) {
		_, again, _ := se.revealItem(t, it.ID)
		if again["access_token"] != secret["access_token"] || se.srv.Refreshes() != 0 {
			t.Fatal("a fresh token was renewed")
		}
	})

	t.Run("a token near its expiry is renewed before it is revealed", func(t *testing.T) {
		se.clock.Advance(14 * time.Minute)
		status, fresh, body := se.revealItem(t, it.ID)
		if status != 200 {
			t.Fatalf("reveal: %d %s", status, body)
		}
		if fresh["access_token"] == secret["access_token"] || se.srv.Refreshes() != 1 {
			t.Fatalf("not renewed (%d refreshes)", se.srv.Refreshes())
		}
		if _, ok := se.srv.UserOf(fresh["access_token"]); !ok {
			t.Fatal("the renewed token does not work at Stitch")
		}
		if _, ok := se.srv.UserOf(secret["access_token"]); ok {
			t.Fatal("the old user token still works after the refresh")
		}
		if se.outboxCount(t, "item.token_rotated", it.ID) != 0 {
			t.Fatal("a refresh told the app its token rotated")
		}
	})

	t.Run("an expired token is renewed too", func(t *testing.T) {
		se.clock.Advance(time.Hour)
		status, fresh, _ := se.revealItem(t, it.ID)
		if _, ok := se.srv.UserOf(fresh["access_token"]); status != 200 || !ok {
			t.Fatalf("reveal of an expired token: %d", status)
		}
	})

	t.Run("no Stitch token is in a log line, an audit entry or a clear column", func(t *testing.T) {
		for _, canary := range []string{"stitch-rt-", "stitch-ut-", "stitch-v1.", "stitch-code."} {
			if strings.Contains(se.Logs.String(), canary) {
				t.Fatalf("the logs carry a Stitch token (%s…)", canary)
			}
			var n int
			if err := se.DB.Pool.QueryRow(context.Background(), `SELECT
				(SELECT count(*) FROM audit_entries WHERE details::text LIKE '%' || $1 || '%') +
				(SELECT count(*) FROM items WHERE row_to_json(items)::text LIKE '%' || $1 || '%') +
				(SELECT count(*) FROM link_sessions WHERE row_to_json(link_sessions)::text LIKE '%' || $1 || '%')`, canary).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Fatalf("%d rows carry a Stitch token (%s…) in the clear", n, canary)
			}
		}
	})

	t.Run("unlinking revokes the grant at Stitch", func(t *testing.T) {
		_, fresh, _ := se.revealItem(t, it.ID)
		status, _, body := se.call(t, "DELETE", "/v1/items/"+it.ID, tok, "")
		if status != 204 {
			t.Fatalf("unlink: %d %s", status, body)
		}
		if _, ok := se.srv.UserOf(fresh["access_token"]); ok {
			t.Fatal("the user token works after the unlink")
		}
	})
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestTheStitchCallbackRefusesWhatKluisDidNotStart(t *testing.T) {
	se := startStitch(t)
	tok := userToken(t, "user_stitch_cb")
	s, _ := se.sessionWith(t, tok, `{"provider":"stitch"}`)
	redirect, err := se.srv.Authorize(s.LinkToken)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(redirect)
	q := u.Query()

	t.Run("a state kluis did not make is 400", func(t *testing.T) {
		bad := url.Values{"code": {q.Get("code")}, "state": {s.ID + ".forged"}}
		status, _, body := se.call(t, "GET", "/link/callback/stitch?"+bad.Encode(), "", "")
		mustError(t, status, body, 400, "invalid_request")
	})
	t.Run("another provider's callback route is 404", func(t *testing.T) {
		status, _, body := se.call(t, "GET", "/link/callback/plaid?"+q.Encode(), "", "")
		mustError(t, status, body, 404, "not_found")
	})
	t.Run("the callback is taken once", func(t *testing.T) {
		if status, body := se.callback(t, redirect); status != 200 {
			t.Fatalf("first callback: %d %s", status, body)
		}
		status, body := se.callback(t, redirect)
		mustError(t, status, body, 409, "link_session_closed")
	})
	t.Run("a user who declines leaves the session exited", func(t *testing.T) {
		s, _ := se.sessionWith(t, tok, `{"provider":"stitch"}`)
		back, err := se.srv.Decline(s.LinkToken)
		if err != nil {
			t.Fatal(err)
		}
		status, body := se.callback(t, back)
		if status != 200 || !strings.Contains(body, `"status":"exited"`) || strings.Contains(body, "public_token") {
			t.Fatalf("declined callback: %d %s", status, body)
		}
	})
	t.Run("the authorize URL for a session is its link token", func(t *testing.T) {
		s, _ := se.sessionWith(t, tok, `{"provider":"stitch"}`)
		got, err := se.svc.AuthorizeURL(context.Background(), s.ID)
		if err != nil || got != s.LinkToken {
			t.Fatalf("AuthorizeURL = %v, want the session's link token", err)
		}
	})
}

// TestTwoKluisInstancesRenewingOneStitchTokenSpendItsRefreshTokenOnce races
// reveals on two instances (two services over one database) while the
// token is near its expiry: one refresh, no refresh token spent twice, and
// every reveal gets the one new token.
func TestTwoKluisInstancesRenewingOneStitchTokenSpendItsRefreshTokenOnce(t *testing.T) {
	se := startStitch(t)
	tok := userToken(t, "user_stitch_race")
	it := se.linkStitch(t, tok)
	other := se.instance(t, se.deps, newStitch(t, se.srv, se.clock))
	se.clock.Advance(14 * time.Minute)

	const n = 16
	var wg sync.WaitGroup
	got := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := se.svc
			if i%2 == 1 {
				svc = other
			}
			cred := se.credential(t, it.ID)
			defer cred.Zero()
			ss, err := svc.ServiceCredential(context.Background(), cred)
			errs[i] = err
			got[i] = string(ss.Secret)
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("reveal %d: %v", i, errs[i])
		}
		if got[i] != got[0] {
			t.Fatal("two reveals got different tokens")
		}
	}
	if se.srv.Refreshes() != 1 || se.srv.RefreshReuses() != 0 {
		t.Fatalf("%d refreshes and %d reuses of a spent refresh token, want 1 and 0", se.srv.Refreshes(), se.srv.RefreshReuses())
	}
	if status, secret, _ := se.revealItem(t, it.ID); status != 200 || !strings.Contains(got[0], secret["access_token"]) {
		t.Fatal("the reveal after the race does not get the renewed token")
	}
}

// crashAfterAnswer is the Stitch adapter of an instance that dies between
// Stitch's answer to a refresh and its commit: the new pair is lost with it.
type crashAfterAnswer struct{ *stitch.Provider }

func (c crashAfterAnswer) RotateAccessToken(ctx context.Context, token string) (string, error) {
	_, _ = c.Provider.RotateAccessToken(ctx, token)
	runtime.Goexit()
	return "", nil
}

// TestAStitchRefreshCutShortOrWhoseAnswerIsLostEndsInRelinkRequired: an
// instance that dies between Stitch's answer and the commit, or an answer
// lost on the way, leaves kluis without a live refresh token. The next
// renewal finds that out (Stitch refuses the spent token), and the item
// becomes relink_required with an item.relink_required event: never active
// with a dead token. A reveal then answers 409 item_relink_required.
func TestAStitchRefreshCutShortOrWhoseAnswerIsLostEndsInRelinkRequired(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(se *stitchEnv, itemID string)
	}{
		{"an instance dies between Stitch's answer and the commit", func(se *stitchEnv, itemID string) {
			crashing := se.instance(t, se.deps, crashAfterAnswer{newStitch(t, se.srv, se.clock)})
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = crashing.RefreshToken(context.Background(), itemID)
			}()
			<-done
			if se.srv.Refreshes() != 1 {
				t.Fatal("the crashing instance did not refresh at Stitch")
			}
			se.clock.Advance(2 * time.Minute) // its lease runs out
		}},
		{"Stitch's answer to the refresh is lost", func(se *stitchEnv, _ string) {
			se.srv.LoseRefreshAnswers(1)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			se := startStitch(t)
			tok := userToken(t, "user_stitch_lost")
			it := se.linkStitch(t, tok)
			se.clock.Advance(14 * time.Minute)
			tc.fault(se, it.ID)

			status, _, body := se.revealItem(t, it.ID)
			mustError(t, status, body, 409, "item_relink_required")
			if got := se.itemStatus(t, it.ID); got != "relink_required" {
				t.Fatalf("item status = %q, want relink_required", got)
			}
			if se.outboxCount(t, "item.relink_required", it.ID) != 1 {
				t.Fatal("no item.relink_required event")
			}
			status, _, body = se.revealItem(t, it.ID)
			mustError(t, status, body, 409, "item_relink_required")
		})
	}
}
