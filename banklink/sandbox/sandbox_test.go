package sandbox_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/sandbox"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

var secret = []byte("sandbox-test-secret-0123456789abcdefghij")

// fixedClock tells the time a test sets.
type fixedClock struct{ t time.Time }

func (c *fixedClock) Now() time.Time { return c.t }

func newSandbox(t *testing.T) (*sandbox.Provider, *fixedClock) {
	t.Helper()
	db, _ := pgtest.Open(t)
	clock := &fixedClock{t: time.Now().UTC()}
	p, err := sandbox.New(sandbox.Options{DB: db, Secret: secret, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return p, clock
}

// link completes Link at inst and exchanges the public token.
func link(t *testing.T, p *sandbox.Provider, inst string) banklink.Exchange {
	t.Helper()
	ctx := context.Background()
	pub, err := p.CompleteLink(ctx, banklink.SandboxLink{InstitutionID: inst, Username: sandbox.GoodUsername, Password: sandbox.GoodPassword})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := p.ExchangePublicToken(ctx, pub)
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

func TestSandboxLoginsAndInstitutionsAnswerAsDocumented(t *testing.T) {
	p, _ := newSandbox(t)
	cases := []struct {
		name, inst, user, pass, code string
	}{
		{"the good login at ins_sandbox works", sandbox.InstitutionAuth, "user_good", "pass_good", ""},
		{"a wrong password is invalid_credentials", sandbox.InstitutionAuth, "user_good", "nope", banklink.CodeInvalidCredentials},
		{"another user is invalid_credentials", sandbox.InstitutionAuth, "user_bad", "pass_good", banklink.CodeInvalidCredentials},
		{"ins_sandbox_down is institution_down", sandbox.InstitutionDown, "user_good", "pass_good", banklink.CodeInstitutionDown},
		{"an unknown institution is invalid", "ins_nowhere", "user_good", "pass_good", kluis.EInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.CompleteLink(context.Background(), banklink.SandboxLink{InstitutionID: tc.inst, Username: tc.user, Password: tc.pass})
			if got := kluis.ErrorCode(err); got != tc.code {
				t.Fatalf("code = %q, want %q (%v)", got, tc.code, err)
			}
		})
	}
}

func TestSandboxTokensAreSingleUseAndDieWhenRotatedOrRemoved(t *testing.T) {
	p, _ := newSandbox(t)
	ctx := context.Background()
	pub, err := p.CompleteLink(ctx, banklink.SandboxLink{InstitutionID: sandbox.InstitutionAuth, Username: "user_good", Password: "pass_good"})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := p.ExchangePublicToken(ctx, pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.ExchangePublicToken(ctx, pub); kluis.ErrorCode(err) != banklink.CodeInvalidToken {
		t.Fatalf("second exchange = %v, want invalid_token", err)
	}
	auth, err := p.GetAuth(ctx, ex.AccessToken)
	if err != nil || len(auth) != 2 || len(auth[0].AccountNumber) != 12 {
		t.Fatalf("auth = %+v, %v", auth, err)
	}
	fresh, err := p.RotateAccessToken(ctx, ex.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.GetAccounts(ctx, ex.AccessToken); kluis.ErrorCode(err) != banklink.CodeInvalidToken {
		t.Fatalf("the rotated-out token = %v, want invalid_token", err)
	}
	again, err := p.GetAuth(ctx, fresh)
	if err != nil || again[0].AccountNumber != auth[0].AccountNumber {
		t.Fatalf("numbers changed with the token: %v", err)
	}
	if err := p.RemoveItem(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	if err := p.RemoveItem(ctx, fresh); kluis.ErrorCode(err) != banklink.CodeInvalidToken {
		t.Fatalf("second remove = %v, want invalid_token", err)
	}
	noauth := link(t, p, sandbox.InstitutionNoAuth)
	if _, err := p.GetAuth(ctx, noauth.AccessToken); kluis.ErrorCode(err) != banklink.CodeProductNotSupported {
		t.Fatalf("auth at ins_sandbox_noauth = %v", err)
	}
}

func TestSandboxWebhookSignatures(t *testing.T) {
	p, clock := newSandbox(t)
	ctx := context.Background()
	ex := link(t, p, sandbox.InstitutionAuth)
	h, body, err := p.SignedWebhook(ctx, ex.ProviderItemID, banklink.SandboxWebhookLoginRequired)
	if err != nil {
		t.Fatal(err)
	}
	other, err := sandbox.New(sandbox.Options{DB: nil, Secret: secret})
	if err == nil || other != nil {
		t.Fatal("a sandbox without a database was built")
	}
	with := func(v string) http.Header { hh := http.Header{}; hh.Set(sandbox.SignatureHeader, v); return hh }
	sig := h.Get(sandbox.SignatureHeader)
	cases := []struct {
		name   string
		header http.Header
		body   []byte
		ok     bool
	}{
		{"a valid signature verifies", h, body, true},
		{"a changed body is refused", h, []byte(strings.Replace(string(body), "LOGIN_REQUIRED", "NEW_ACCOUNTS", 1)), false},
		{"no header is refused", http.Header{}, body, false},
		{"a garbled header is refused", with("garbage"), body, false},
		{"a signature under another secret is refused", with(strings.Replace(sig, "v1=", "v1=ff", 1)), body, false},
		{"a timestamp six minutes old is refused", with(p.Sign(clock.t.Add(-6*time.Minute), body)), body, false},
		{"a timestamp six minutes ahead is refused", with(p.Sign(clock.t.Add(6*time.Minute), body)), body, false},
		{"a timestamp four minutes old is accepted", with(p.Sign(clock.t.Add(-4*time.Minute), body)), body, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := p.VerifyWebhook(ctx, tc.header, tc.body)
			if tc.ok {
				if err != nil || ev.Kind != banklink.EventLoginRequired || ev.ProviderItemID != ex.ProviderItemID || ev.ID == "" {
					t.Fatalf("event = %+v, %v", ev, err)
				}
				return
			}
			if kluis.ErrorCode(err) != banklink.CodeBadSignature {
				t.Fatalf("err = %v, want bad_signature", err)
			}
		})
	}
	// The webhook made the item's login required at the sandbox.
	if _, err := p.GetAccounts(ctx, ex.AccessToken); kluis.ErrorCode(err) != banklink.CodeItemLoginRequired {
		t.Fatalf("after LOGIN_REQUIRED: %v", err)
	}
}
