package sandbox_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
	"github.com/kluis-dev/kluis/banklink/plaidwebhook"
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
	h, body, err := p.SignedWebhook(ctx, banklink.SandboxWebhook{ProviderItemID: ex.ProviderItemID, Code: "ERROR"})
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
		{"a changed body is refused", h, []byte(strings.Replace(string(body), "ITEM_LOGIN_REQUIRED", "ITEM_LOCKED", 1)), false},
		{"a changed delivery id is refused", with(strings.Replace(sig, ",id=", ",id=x", 1)), body, false},
		{"no delivery id is refused", with(regexp.MustCompile(`,id=[^,]*`).ReplaceAllString(sig, "")), body, false},
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
		t.Fatalf("after ITEM_LOGIN_REQUIRED: %v", err)
	}
	// The same body signed again is a new delivery, with its own id: a
	// second ITEM_LOGIN_REQUIRED after a repair is an event of its own.
	again, err := p.VerifyWebhook(ctx, with(p.Sign(clock.t, body)), body)
	first, _ := p.VerifyWebhook(ctx, h, body)
	if err != nil || again.ID == first.ID {
		t.Fatalf("a second delivery of the same body has id %q (the first %q), %v", again.ID, first.ID, err)
	}
}

// TestSandboxWebhooksAreInPlaidsShapes (issue 14): every webhook the sandbox
// fires is one of the bodies Plaid's OpenAPI describes for its type and
// code, is read by the one decoding Plaid's go through to the kind Plaid's
// would be, and changes the sandbox's own state as Plaid's would.
func TestSandboxWebhooksAreInPlaidsShapes(t *testing.T) {
	p, _ := newSandbox(t)
	ctx := context.Background()
	spec := plaidtest.LoadSpec(t)
	ex := link(t, p, sandbox.InstitutionAuth)
	accts, err := p.GetAccounts(ctx, ex.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	fire := func(t *testing.T, w banklink.SandboxWebhook) banklink.WebhookEvent {
		t.Helper()
		h, body, err := p.SignedWebhook(ctx, w)
		if err != nil {
			t.Fatalf("fire %+v: %v", w, err)
		}
		if bad := spec.ValidateWebhook(body); len(bad) > 0 {
			t.Fatalf("%s is not in Plaid's shape: %v", body, bad)
		}
		ev, err := p.VerifyWebhook(ctx, h, body)
		if err != nil {
			t.Fatal(err)
		}
		want, err := plaidwebhook.Decode(body)
		if err != nil {
			t.Fatal(err)
		}
		want.ID = ev.ID
		if ev != want {
			t.Fatalf("the sandbox read %s as %+v, the shared decoding as %+v", body, ev, want)
		}
		return ev
	}
	item := ex.ProviderItemID
	cases := []struct {
		w    banklink.SandboxWebhook
		kind string
	}{
		{banklink.SandboxWebhook{Code: "ERROR", ErrorCode: "INSTITUTION_DOWN"}, banklink.EventItemError},
		{banklink.SandboxWebhook{Code: "PENDING_EXPIRATION"}, banklink.EventLoginRequired},
		{banklink.SandboxWebhook{Code: "PENDING_DISCONNECT"}, banklink.EventLoginRequired},
		{banklink.SandboxWebhook{Code: "USER_ACCOUNT_REVOKED", ProviderAccountID: accts.Accounts[0].ProviderAccountID}, banklink.EventAccountRevoked},
		{banklink.SandboxWebhook{Code: "NEW_ACCOUNTS_AVAILABLE"}, banklink.EventNewAccounts},
		{banklink.SandboxWebhook{Code: "ERROR"}, banklink.EventLoginRequired},
		{banklink.SandboxWebhook{Code: "LOGIN_REPAIRED"}, banklink.EventLoginRepaired},
		{banklink.SandboxWebhook{Code: "ERROR", ErrorCode: "ITEM_LOCKED"}, banklink.EventLoginRequired},
		{banklink.SandboxWebhook{Code: "LOGIN_REPAIRED"}, banklink.EventLoginRepaired},
	}
	for _, tc := range cases {
		tc.w.ProviderItemID = item
		if ev := fire(t, tc.w); ev.Kind != tc.kind || ev.ProviderItemID != item {
			t.Fatalf("%+v fired %+v, want kind %s", tc.w, ev, tc.kind)
		}
		_, err := p.GetAccounts(ctx, ex.AccessToken)
		switch {
		case tc.w.Code == "ERROR" && tc.kind == banklink.EventLoginRequired:
			if kluis.ErrorCode(err) != banklink.CodeItemLoginRequired {
				t.Fatalf("after %+v: %v, want item_login_required", tc.w, err)
			}
		case err != nil:
			t.Fatalf("after %+v the item's calls fail: %v", tc.w, err)
		}
	}
	if got, err := p.GetAccounts(ctx, ex.AccessToken); err != nil || len(got.Accounts) != 3 {
		t.Fatalf("after NEW_ACCOUNTS_AVAILABLE: %d accounts, %v", len(got.Accounts), err)
	}
	// Another code is sent as is, with no fields of its own (the sandbox
	// plays only the codes above): recorded and ignored by kluis.
	h, body, err := p.SignedWebhook(ctx, banklink.SandboxWebhook{ProviderItemID: item, Type: "AUTH", Code: "DEFAULT_UPDATE"})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := p.VerifyWebhook(ctx, h, body); err != nil || ev.Kind != banklink.EventUnknown || ev.ProviderType != "AUTH" {
		t.Fatalf("AUTH/DEFAULT_UPDATE = %+v, %v", ev, err)
	}
	// USER_ACCOUNT_REVOKED needs its account; codes must be Plaid's names.
	for _, w := range []banklink.SandboxWebhook{{Code: "USER_ACCOUNT_REVOKED"}, {Code: "login required"},
		{Code: "ERROR", ErrorCode: "bad code"}, {Code: "ERROR", Type: "item"}} {
		w.ProviderItemID = item
		if _, _, err := p.SignedWebhook(ctx, w); kluis.ErrorCode(err) != kluis.EInvalid {
			t.Fatalf("%+v = %v, want invalid", w, err)
		}
	}
	// AUTH codes end an Automated Micro-deposits item's wait, and no other.
	if _, _, err := p.SignedWebhook(ctx, banklink.SandboxWebhook{ProviderItemID: item, Code: "AUTOMATICALLY_VERIFIED"}); kluis.ErrorCode(err) != kluis.EConflict {
		t.Fatalf("AUTOMATICALLY_VERIFIED for an instant-auth item = %v, want conflict", err)
	}
	auto := link(t, p, sandbox.InstitutionAutomated)
	if ev := fire(t, banklink.SandboxWebhook{ProviderItemID: auto.ProviderItemID, Code: "AUTOMATICALLY_VERIFIED"}); ev.Kind != banklink.EventAuthVerified || ev.ProviderAccountID == "" {
		t.Fatalf("AUTOMATICALLY_VERIFIED = %+v", ev)
	}
	expiring := link(t, p, sandbox.InstitutionAutomated)
	if ev := fire(t, banklink.SandboxWebhook{ProviderItemID: expiring.ProviderItemID, Code: "VERIFICATION_EXPIRED"}); ev.Kind != banklink.EventAuthExpired {
		t.Fatalf("VERIFICATION_EXPIRED = %+v", ev)
	}
	// Plaid's SMS flow ends a Same Day item's wait (with its status and
	// account, as Plaid's body has them), and no other item's.
	if _, _, err := p.SignedWebhook(ctx, banklink.SandboxWebhook{ProviderItemID: item, Code: "SMS_MICRODEPOSITS_VERIFICATION"}); kluis.ErrorCode(err) != kluis.EConflict {
		t.Fatalf("SMS_MICRODEPOSITS_VERIFICATION for an instant-auth item = %v, want conflict", err)
	}
	for _, tc := range []struct{ status, kind, verification string }{
		{"", banklink.EventAuthVerified, "manually_verified"},
		{"MANUALLY_VERIFIED", banklink.EventAuthVerified, "manually_verified"},
		{"VERIFICATION_FAILED", banklink.EventAuthFailed, "verification_failed"},
	} {
		sameDay := link(t, p, sandbox.InstitutionSameDay)
		before, err := p.GetAccounts(ctx, sameDay.AccessToken)
		if err != nil || before.Accounts[0].VerificationStatus != "pending_manual_verification" {
			t.Fatalf("a Same Day item's account: %+v %v", before.Accounts, err)
		}
		w := banklink.SandboxWebhook{ProviderItemID: sameDay.ProviderItemID, Code: "SMS_MICRODEPOSITS_VERIFICATION", Status: tc.status}
		ev := fire(t, w)
		if ev.Kind != tc.kind || ev.ProviderAccountID != before.Accounts[0].ProviderAccountID || ev.VerificationStatus != tc.verification {
			t.Fatalf("SMS_MICRODEPOSITS_VERIFICATION %q = %+v", tc.status, ev)
		}
		if after, err := p.GetAccounts(ctx, sameDay.AccessToken); err != nil || after.Accounts[0].VerificationStatus != tc.verification {
			t.Fatalf("after SMS %q the account is %+v, %v", tc.status, after.Accounts, err)
		}
		if _, _, err := p.SignedWebhook(ctx, w); kluis.ErrorCode(err) != kluis.EConflict {
			t.Fatalf("SMS_MICRODEPOSITS_VERIFICATION for an item no longer waiting = %v, want conflict", err)
		}
	}
	for _, w := range []banklink.SandboxWebhook{{Code: "SMS_MICRODEPOSITS_VERIFICATION", Status: "VERIFIED"},
		{Code: "LOGIN_REPAIRED", Status: "MANUALLY_VERIFIED"}} {
		w.ProviderItemID = item
		if _, _, err := p.SignedWebhook(ctx, w); kluis.ErrorCode(err) != kluis.EInvalid {
			t.Fatalf("%+v = %v, want invalid", w, err)
		}
	}
	// WEBHOOK_UPDATE_ACKNOWLEDGED names the item's new webhook URL, which
	// Plaid's always carries: without kluis's, the sandbox refuses it.
	if ev := fire(t, banklink.SandboxWebhook{ProviderItemID: item, Code: "WEBHOOK_UPDATE_ACKNOWLEDGED",
		WebhookURL: "https://kluis.example/webhooks/sandbox"}); ev.Kind != banklink.EventWebhookUpdated {
		t.Fatalf("WEBHOOK_UPDATE_ACKNOWLEDGED = %+v", ev)
	}
	if _, body, err := p.SignedWebhook(ctx, banklink.SandboxWebhook{ProviderItemID: item, Code: "WEBHOOK_UPDATE_ACKNOWLEDGED",
		WebhookURL: "https://kluis.example/webhooks/sandbox"}); err != nil || !strings.Contains(string(body), `"new_webhook_url":"https://kluis.example/webhooks/sandbox"`) {
		t.Fatalf("WEBHOOK_UPDATE_ACKNOWLEDGED's body %s, %v", body, err)
	}
	if _, _, err := p.SignedWebhook(ctx, banklink.SandboxWebhook{ProviderItemID: item, Code: "WEBHOOK_UPDATE_ACKNOWLEDGED"}); kluis.ErrorCode(err) != kluis.EConflict {
		t.Fatalf("WEBHOOK_UPDATE_ACKNOWLEDGED without a URL = %v, want conflict", err)
	}
	// Consent withdrawn: the access token dies.
	fire(t, banklink.SandboxWebhook{ProviderItemID: item, Code: "USER_PERMISSION_REVOKED"})
	if _, err := p.GetAccounts(ctx, ex.AccessToken); kluis.ErrorCode(err) != banklink.CodeInvalidToken {
		t.Fatalf("after USER_PERMISSION_REVOKED: %v, want invalid_token", err)
	}
}
