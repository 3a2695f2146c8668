package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/jwtauth"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/apps"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/events"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
)

// merchantAudience is the audience of the merchant app's user tokens; the
// consumer app's is jwttest.UserAudience, so userToken is a consumer token.
const merchantAudience = "merchant-app"

// hookReceiver is one app's event endpoint: it checks each delivery's
// signature with the app's secret and keeps what it got.
type hookReceiver struct {
	t      *testing.T
	secret []byte
	srv    *httptest.Server
	mu     sync.Mutex
	got    []events.Payload
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	t.Helper()
	h := &hookReceiver{t: t, secret: []byte(secret)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := events.VerifySignature(h.secret, r.Header.Get(events.SignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
			h.t.Errorf("a delivery that does not verify with the app's secret: %v", err)
			w.WriteHeader(400)
			return
		}
		var p events.Payload
		if err := json.Unmarshal(body, &p); err != nil {
			h.t.Errorf("delivery body: %v", err)
		}
		h.mu.Lock()
		h.got = append(h.got, p)
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// mentions counts the deliveries whose data names id.
func (h *hookReceiver) mentions(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, p := range h.got {
		for _, v := range p.Data {
			if v == id {
				n++
				break
			}
		}
	}
	return n
}

// appsEnv is kluis with two apps, consumer and merchant, on one database:
// bank linking, verification, compliance and the event worker, each app
// with an event endpoint of its own.
type appsEnv struct {
	*verifyEnv
	bank               *bankEnv
	worker             *events.Worker
	consumer, merchant *hookReceiver
	console            *http.Client
}

// writeAppsFile writes the two apps' file (and their secret files).
func writeAppsFile(t *testing.T, consumerURL, merchantURL string) string {
	t.Helper()
	dir := t.TempDir()
	for name, secret := range map[string]string{"consumer": consumerSecret, "merchant": merchantSecret} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return fmt.Sprintf(`
apps:
  consumer:
    jwt: {issuer: %q, audience: %q}
    allowed_origins: [https://consumer.example]
    redirect_uris: [https://consumer.example/linked]
    events:
      endpoints:
        - id: main
          url: %s/hooks?token=consumer-canary
          secrets: [{file: %s}]
  merchant:
    jwt: {issuer: %q, audience: %q}
    plaid_link: {client_name: Merchant}
    events:
      endpoints:
        - id: main
          url: %s
          secrets: [{file: %s}]
`, jwttest.Issuer, jwttest.UserAudience, consumerURL, filepath.Join(dir, "consumer"),
		jwttest.Issuer, merchantAudience, merchantURL, filepath.Join(dir, "merchant"))
}

const (
	consumerSecret = "consumer-whsec-0123456789abcdef0123456789"
	merchantSecret = "merchant-whsec-0123456789abcdef0123456789"
)

// twoAppsPolicy adds a service that may reveal only the merchant app's
// users' credentials.
const twoAppsPolicy = apitest.Policy + `
  merchant-payments:
    reveal:
      kinds: [bank_access_token, account_number]
      purposes: [payment_initiation]
      apps: [merchant]
`

func startApps(t *testing.T) *appsEnv {
	t.Helper()
	ae := &appsEnv{consumer: newHookReceiver(t, consumerSecret), merchant: newHookReceiver(t, merchantSecret)}
	set, _, err := apps.Parse([]byte(writeAppsFile(t, ae.consumer.srv.URL, ae.merchant.srv.URL)),
		apps.Options{StaffAudience: jwttest.StaffAudience})
	if err != nil {
		t.Fatal(err)
	}
	reg := apps.Static(set)
	policy, err := api.ParsePolicy([]byte(twoAppsPolicy))
	if err != nil {
		t.Fatal(err)
	}
	late := &lateRing{}
	ae.verifyEnv = startVerifyWith(t, false, []apitest.Option{func(d *api.Deps) {
		shared := d.Auth.(api.JWTAuthenticator).Verifier
		d.Auth = api.JWTAuthenticator{Verifier: shared, Users: &api.UserVerifiers{Apps: reg, Shared: shared}}
		d.Apps, d.Policy = reg, policy
		comp := compliance.NewService(d.DB, d.Auditor, late, nil)
		comp.AddRevoker(d.BankLink)
		d.Compliance = comp
		w, err := events.NewWorker(events.WorkerOptions{DB: d.DB, Apps: reg, BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ae.worker = w
	}})
	late.ring = ae.Ring
	ae.bank = &bankEnv{Env: ae.Env}
	ae.console = ae.ServiceClient(t, "compliance-console")
	return ae
}

func merchantToken(t *testing.T, sub string) string {
	t.Helper()
	return jwttest.Token(t, jwttest.WithSubject(sub), jwttest.WithAudience(merchantAudience))
}

// deliver runs the event worker until nothing is due.
func (ae *appsEnv) deliver(t *testing.T) {
	t.Helper()
	for i := 0; i < 50; i++ {
		n, err := ae.worker.Tick(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
	t.Fatal("deliveries still due after 50 passes")
}

// compliance sends a compliance request as staff member by.
func (ae *appsEnv) compliance(t *testing.T, method, path, by, body string) (int, string) {
	t.Helper()
	ct := ""
	if body != "" {
		ct = "application/json"
	}
	status, _, out := apitest.Do(t, ae.console, method, ae.Internal.URL+"/compliance/v1"+path, staff(t, by), ct, body)
	return status, out
}

func TestTwoAppsNeitherSeesTheOthersUsersThroughAnyRoute(t *testing.T) {
	ae := startApps(t)
	// The same sub in both apps: two people.
	consumer, merchant := userToken(t, "alice"), merchantToken(t, "alice")
	item := ae.bank.linkSandbox(t, consumer, "ins_sandbox_noauth")
	manual := ae.manualAccount(t, consumer, canaryAccount)
	v := ae.start(t, consumer, item.Accounts[0].ID, "micro_deposits", 201)
	open := ae.bank.newSession(t, consumer, "")
	mine := ae.bank.linkSandbox(t, merchant, "ins_sandbox") // the merchant's alice has an item of her own

	cases := []foreignCase{
		{"get item", "GET", "/v1/items/%s", item.ID, random("itm_"), ""},
		{"delete item", "DELETE", "/v1/items/%s", item.ID, random("itm_"), ""},
		{"get a linked account", "GET", "/v1/accounts/%s", item.Accounts[0].ID, random("acc_"), ""},
		{"get a manual account", "GET", "/v1/accounts/%s", manual.ID, random("acc_"), ""},
		{"start a verification", "POST", "/v1/accounts/%s/verifications", manual.ID, random("acc_"), `{"method":"micro_deposits"}`},
		{"get a verification", "GET", "/v1/verifications/%s", v.ID, random("ver_"), ""},
		{"confirm a verification", "POST", "/v1/verifications/%s/confirm", v.ID, random("ver_"), `{"amounts":[1,2]}`},
		{"sandbox deposits", "GET", "/v1/sandbox/verifications/%s/deposits", v.ID, random("ver_"), ""},
		{"exchange a session", "POST", "/v1/link/sessions/%s/exchange", open.ID, random("lks_"), `{"public_token":"public-sandbox-x"}`},
		{"update mode for an item", "POST", "/v1/link/sessions", item.ID, random("itm_"), `{"item_id":"%s"}`},
		{"sandbox public token", "POST", "/v1/sandbox/public-token", open.ID, random("lks_"),
			`{"link_session_id":"%s","institution_id":"ins_sandbox","username":"user_good","password":"pass_good"}`},
		{"fire a webhook", "POST", "/v1/sandbox/items/%s/fire-webhook", item.ID, random("itm_"), `{"code":"ERROR","error_code":"ITEM_LOGIN_REQUIRED"}`},
	}
	ae.bank.answersAsRandomIDs(t, merchant, cases)

	t.Run("lists show each app's own", func(t *testing.T) {
		for _, tc := range []struct {
			name, tok, path, want, notWant string
		}{
			{"merchant items", merchant, "/v1/items", mine.ID, item.ID},
			{"consumer items", consumer, "/v1/items", item.ID, mine.ID},
			{"merchant accounts", merchant, "/v1/accounts", mine.Accounts[0].ID, manual.ID},
			{"consumer accounts", consumer, "/v1/accounts", manual.ID, mine.Accounts[0].ID},
		} {
			status, _, body := ae.bank.call(t, "GET", tc.path, tc.tok, "")
			if status != 200 || !strings.Contains(body, tc.want) || strings.Contains(body, tc.notWant) {
				t.Errorf("%s: %d %s", tc.name, status, body)
			}
		}
	})

	t.Run("a token is one app's", func(t *testing.T) {
		both := jwttest.Token(t, jwttest.WithSubject("alice"), jwttest.WithAudience(jwttest.UserAudience, merchantAudience))
		nobody := jwttest.Token(t, jwttest.WithSubject("alice"), jwttest.WithAudience("no-such-app"))
		for name, tok := range map[string]string{"both audiences": both, "no app's audience": nobody} {
			status, _, body := ae.bank.call(t, "GET", "/v1/items", tok, "")
			if status != 401 {
				t.Errorf("%s: %d %s, want 401", name, status, body)
			}
		}
	})

	t.Run("the access report is the app's user's", func(t *testing.T) {
		status, _, body := ae.bank.call(t, "GET", "/v1/me/access-report", merchant, "")
		if status != 200 {
			t.Fatalf("%d %s", status, body)
		}
		if strings.Contains(body, "verification") || strings.Contains(body, item.ID) {
			t.Fatalf("the merchant's alice sees the consumer's alice's history: %s", body)
		}
	})

	// Nothing of the consumer's changed.
	status, _, body := ae.bank.call(t, "GET", "/v1/items/"+item.ID, consumer, "")
	var got itemBody
	want(t, status, 200, body, &got)
	if got.Status != "active" {
		t.Fatalf("the consumer's item changed: %+v", got)
	}
	var subjects int
	if err := ae.DB.Pool.QueryRow(context.Background(), `SELECT count(DISTINCT app_id) FROM subjects WHERE external_id = 'alice'`).Scan(&subjects); err != nil {
		t.Fatal(err)
	}
	if subjects != 2 {
		t.Fatalf("alice is a subject in %d apps, want 2", subjects)
	}
}

func TestAServiceLimitedToOneAppRevealsOnlyThatAppsCredentials(t *testing.T) {
	ae := startApps(t)
	theirs := ae.bank.linkSandbox(t, userToken(t, "bob"), "ins_sandbox")
	ours := ae.bank.linkSandbox(t, merchantToken(t, "bob"), "ins_sandbox")
	svc := ae.ServiceClient(t, "merchant-payments")
	for _, tc := range []struct {
		name   string
		item   string
		status int
	}{
		{"the merchant's user's token", ours.ID, 200},
		{"the consumer's user's token", theirs.ID, 403},
	} {
		url := ae.Internal.URL + "/internal/v1/items/" + tc.item + "/reveal"
		status, _, body := apitest.Do(t, svc, "POST", url, "", "application/json", `{"purpose":"payment_initiation"}`)
		if status != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, status, body, tc.status)
		}
	}
	// A service the policy does not limit reveals both.
	if status, _ := ae.bank.reveal(t, ae.ServiceClient(t, "payments"), ae.credentialRef(t, theirs.ID)); status != 200 {
		t.Fatalf("payments revealing the consumer's: %d", status)
	}
}

// credentialRef is the item's credential_ref, read on the internal listener.
func (ae *appsEnv) credentialRef(t *testing.T, itemID string) string {
	t.Helper()
	status, it := ae.bank.internalItem(t, itemID)
	if status != 200 || it.CredentialRef == "" {
		t.Fatalf("internal item: %d", status)
	}
	return it.CredentialRef
}

func TestComplianceRoutesNameTheAppWhenThereAreSeveral(t *testing.T) {
	ae := startApps(t)
	consumerItem := ae.bank.linkSandbox(t, userToken(t, "carol"), "ins_sandbox")
	merchantItem := ae.bank.linkSandbox(t, merchantToken(t, "carol"), "ins_sandbox")

	for _, tc := range []struct{ name, method, path, body string }{
		{"erasure request", "POST", "/erasure-requests", `{"subject_id":"carol","reason":"asked"}`},
		{"legal hold", "POST", "/legal-holds", `{"subject_id":"carol","reason":"case"}`},
		{"export", "GET", "/subjects/carol/export", ""},
		{"access report", "GET", "/subjects/carol/access-report", ""},
	} {
		t.Run(tc.name+" without app", func(t *testing.T) {
			status, body := ae.compliance(t, tc.method, tc.path, "staff_1", tc.body)
			mustError(t, status, body, 400, "invalid_request")
			if !strings.Contains(body, `"field":"app"`) {
				t.Fatalf("the 400 does not name the parameter: %s", body)
			}
		})
	}
	status, body := ae.compliance(t, "GET", "/subjects/carol/export?app=nope", "staff_1", "")
	mustError(t, status, body, 400, "invalid_request")

	status, body = ae.compliance(t, "GET", "/subjects/carol/export?app=merchant", "staff_1", "")
	if status != 200 || !strings.Contains(body, merchantItem.ID) || strings.Contains(body, consumerItem.ID) {
		t.Fatalf("the merchant's carol's export: %d %s", status, body)
	}

	// Erasing the merchant's carol leaves the consumer's carol whole.
	status, body = ae.compliance(t, "POST", "/erasure-requests?app=merchant", "staff_1", `{"subject_id":"carol","reason":"asked"}`)
	var era struct {
		ID string `json:"id"`
	}
	want(t, status, 201, body, &era)
	status, body = ae.compliance(t, "POST", "/erasure-requests/"+era.ID+"/approve", "staff_2", "")
	if status != 200 || !strings.Contains(body, `"completed"`) {
		t.Fatalf("approve: %d %s", status, body)
	}
	status, _, body = ae.bank.call(t, "GET", "/v1/items/"+consumerItem.ID, userToken(t, "carol"), "")
	if status != 200 {
		t.Fatalf("the consumer's carol lost her item to the merchant's carol's erasure: %d %s", status, body)
	}
	if _, err := vault.LookupSubject(context.Background(), ae.DB.Pool, "merchant\x1fcarol"); err == nil {
		t.Fatal("the merchant's carol is still a subject")
	}
}

func TestEventsGoOnlyToTheSubjectsAppAndReplayStaysInTheApp(t *testing.T) {
	ae := startApps(t)
	consumer, merchant := userToken(t, "dave"), merchantToken(t, "dave")
	theirs := ae.bank.linkSandbox(t, consumer, "ins_sandbox")
	ours := ae.bank.linkSandbox(t, merchant, "ins_sandbox")
	for _, tc := range []struct{ tok, item string }{{consumer, theirs.ID}, {merchant, ours.ID}} {
		status, _, body := ae.bank.call(t, "POST", "/v1/sandbox/items/"+tc.item+"/fire-webhook", tc.tok, `{"code":"ERROR","error_code":"ITEM_LOGIN_REQUIRED"}`)
		if status >= 300 {
			t.Fatalf("fire webhook: %d %s", status, body)
		}
	}
	ae.deliver(t)
	if ae.consumer.mentions(theirs.ID) == 0 || ae.merchant.mentions(ours.ID) == 0 {
		t.Fatalf("an app missed its own user's event: consumer %d, merchant %d", ae.consumer.mentions(theirs.ID), ae.merchant.mentions(ours.ID))
	}
	if ae.consumer.mentions(ours.ID) != 0 || ae.merchant.mentions(theirs.ID) != 0 {
		t.Fatal("an app received an event about the other app's user")
	}

	var eventID string
	if err := ae.DB.Pool.QueryRow(context.Background(),
		`SELECT id FROM outbox WHERE payload->'data'->>'item_id' = $1 LIMIT 1`, theirs.ID).Scan(&eventID); err != nil {
		t.Fatal(err)
	}
	// The merchant's staff cannot replay the consumer's event: 404, as an
	// unknown event.
	s1, b1 := ae.compliance(t, "POST", "/events/"+eventID+"/replay?app=merchant", "staff_1", "")
	s2, b2 := ae.compliance(t, "POST", "/events/evt_"+strings.Repeat("a", 32)+"/replay?app=merchant", "staff_1", "")
	mustError(t, s1, b1, 404, "not_found")
	if s1 != s2 || withoutRequestID(b1) != withoutRequestID(b2) {
		t.Fatalf("the other app's event: %d %s\nan unknown one:      %d %s", s1, b1, s2, b2)
	}
	before := ae.consumer.mentions(theirs.ID)
	status, body := ae.compliance(t, "POST", "/events/"+eventID+"/replay?app=consumer", "staff_1", `{"endpoint_id":"main"}`)
	if status != 202 || !strings.Contains(body, `"deliveries":1`) {
		t.Fatalf("replay: %d %s", status, body)
	}
	ae.deliver(t)
	if got := ae.consumer.mentions(theirs.ID); got != before+1 {
		t.Fatalf("after the replay the consumer got %d deliveries about the item, want %d", got, before+1)
	}
	if ae.merchant.mentions(theirs.ID) != 0 {
		t.Fatal("the replay reached the other app")
	}
	// The endpoint URL's token never reaches the logs or the database.
	if strings.Contains(ae.Logs.String(), "consumer-canary") {
		t.Fatal("the endpoint URL's token is in the logs")
	}
	if found := rowsMentioning(t, ae.Env, "consumer-canary"); len(found) > 0 {
		t.Fatalf("the endpoint URL's token is stored: %v", found)
	}
}

func TestAnAppWithItsOwnKeysTakesOnlyTokensSignedByThem(t *testing.T) {
	ctx := context.Background()
	shared, err := jwtauth.New(ctx, jwtauth.Options{JWKSFile: jwttest.WriteJWKS(t, jwttest.DefaultKeys()...), Issuer: jwttest.Issuer,
		UserAudience: jwttest.UserAudience, StaffAudience: jwttest.StaffAudience})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(shared.Close)
	own := jwttest.NewECKey(t, "merchant-key")
	set, _, err := apps.Parse([]byte(fmt.Sprintf("apps:\n  consumer: {jwt: {issuer: %q, audience: %q}}\n  merchant: {jwt: {issuer: %q, audience: %q, jwks_file: %q}}\n",
		jwttest.Issuer, jwttest.UserAudience, jwttest.Issuer, merchantAudience, jwttest.WriteJWKS(t, own))), apps.Options{StaffAudience: jwttest.StaffAudience})
	if err != nil {
		t.Fatal(err)
	}
	users := &api.UserVerifiers{Apps: apps.Static(set), Shared: shared, Own: func(j apps.JWT) (*jwtauth.Verifier, error) {
		return jwtauth.New(ctx, jwtauth.Options{JWKSFile: j.JWKSFile, Issuer: j.Issuer, UserAudience: j.Audience, StaffAudience: jwttest.StaffAudience})
	}}
	if err := users.Check(set); err != nil {
		t.Fatal(err)
	}
	auth := api.JWTAuthenticator{Verifier: shared, Users: users}
	for _, tc := range []struct {
		name, token, want string
	}{
		{"a consumer token", jwttest.Token(t, jwttest.WithSubject("erin")), "consumer\x1ferin"},
		{"a merchant token signed by the merchant's key", jwttest.Token(t, jwttest.WithSubject("erin"), jwttest.WithAudience(merchantAudience), jwttest.WithKey(own)), "merchant\x1ferin"},
		{"a merchant token signed by the shared key", jwttest.Token(t, jwttest.WithSubject("erin"), jwttest.WithAudience(merchantAudience)), ""},
		{"a consumer token signed by the merchant's key", jwttest.Token(t, jwttest.WithSubject("erin"), jwttest.WithKey(own)), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := auth.User(ctx, tc.token)
			if tc.want == "" {
				if !errors.Is(err, api.ErrBadToken) {
					t.Fatalf("User = %q, %v; want ErrBadToken", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("User = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestOneAppsFailuresOfAnAccountNumberDoNotLockItForAnotherApp(t *testing.T) {
	ae := startApps(t)
	// Three users of the consumer app fail twice each: the number's limit
	// (verification.DefaultNumberFailures, 6) is reached in that app.
	for i := 0; i < 3; i++ {
		tok := userToken(t, fmt.Sprintf("guesser_%d", i))
		a := ae.manualAccount(t, tok, canaryAccount)
		ae.failRound(t, tok, a.ID)
		ae.failRound(t, tok, a.ID)
	}
	consumer := userToken(t, "frank")
	theirs := ae.manualAccount(t, consumer, canaryAccount)
	status, body := ae.call(t, "POST", "/v1/accounts/"+theirs.ID+"/verifications", consumer, `{"method":"micro_deposits"}`)
	mustErrorReason(t, status, body, 429, "rate_limited", verification.CodeNumberVelocity)
	// The merchant app's user with the same number is not held back by the
	// consumer app's users.
	merchant := merchantToken(t, "frank")
	ours := ae.manualAccount(t, merchant, canaryAccount)
	ae.start(t, merchant, ours.ID, "micro_deposits", 201)
}
