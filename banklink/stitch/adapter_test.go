package stitch_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/stitch/stitchtest"
)

// TestTheStitchProtocolsRulesAreKept covers what the contract does not:
// PKCE binding, a declined consent, reauthorization, a lost refresh answer,
// a spent refresh token, and the token a service gets.
func TestTheStitchProtocolsRulesAreKept(t *testing.T) {
	ctx := context.Background()
	srv := stitchtest.NewServer(t)
	p := newProvider(t, srv)
	authorize := func(state string) string {
		lt, err := p.CreateLinkToken(ctx, banklink.LinkTokenRequest{State: state})
		if err != nil {
			t.Fatal(err)
		}
		return lt.Token
	}

	t.Run("a code redeemed for another session's state is refused (PKCE)", func(t *testing.T) {
		back, err := srv.Authorize(authorize("lks_a.mac"))
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(back)
		q := u.Query()
		q.Set("state", "lks_b.mac")
		pub, err := p.PublicTokenFromCallback(q)
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.ExchangePublicToken(ctx, pub)
		if kluis.ErrorCode(err) != banklink.CodeInvalidToken {
			t.Fatalf("err = %v, want invalid_token", err)
		}
	})

	t.Run("a declined consent is access_not_granted", func(t *testing.T) {
		back, err := srv.Decline(authorize("lks_c.mac"))
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(back)
		if _, err := p.PublicTokenFromCallback(u.Query()); kluis.ErrorCode(err) != banklink.CodeAccessNotGranted {
			t.Fatalf("err = %v", err)
		}
	})

	linked := func(t *testing.T) string {
		t.Helper()
		ex, err := p.ExchangePublicToken(ctx, link(t, srv, p, authorize("lks_d.mac"), stitchtest.BankAuth))
		if err != nil {
			t.Fatal(err)
		}
		return ex.AccessToken
	}

	t.Run("a service gets the user token alone", func(t *testing.T) {
		bundle := linked(t)
		tok, exp, err := p.ServiceToken(bundle)
		if err != nil || exp.IsZero() || strings.Contains(tok, "stitch-rt-") {
			t.Fatalf("service token: %v", err)
		}
		if _, ok := srv.UserOf(tok); !ok {
			t.Fatal("the service token does not work at Stitch")
		}
	})

	t.Run("a bank that asks the user to authorize again is item_login_required", func(t *testing.T) {
		bundle := linked(t)
		accts, err := p.GetAccounts(ctx, bundle)
		if err != nil {
			t.Fatal(err)
		}
		srv.SetReauthRequired(accts.ProviderItemID, true)
		if _, err := p.GetAccounts(ctx, bundle); kluis.ErrorCode(err) != banklink.CodeItemLoginRequired {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("a lost refresh answer is unavailable, and the spent token is then invalid", func(t *testing.T) {
		bundle := linked(t)
		srv.LoseRefreshAnswers(1)
		if _, err := p.RotateAccessToken(ctx, bundle); kluis.ErrorCode(err) != kluis.EUnavailable {
			t.Fatalf("lost answer: err = %v", err)
		}
		if _, err := p.RotateAccessToken(ctx, bundle); kluis.ErrorCode(err) != banklink.CodeInvalidToken {
			t.Fatalf("spent token: err = %v", err)
		}
		if srv.RefreshReuses() != 1 {
			t.Fatalf("reuses = %d", srv.RefreshReuses())
		}
	})
}
