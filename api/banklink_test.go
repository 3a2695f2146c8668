package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/accountnumber"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
	"github.com/kluis-dev/kluis/banklink/sandbox"
	"github.com/kluis-dev/kluis/vault"
)

// sandboxSecret is the test sandbox's signing and derivation secret.
var sandboxSecret = []byte("kluis-test-sandbox-secret-0123456789abcdef")

// bankEnv is a running kluis with bank linking over one provider.
type bankEnv struct {
	*apitest.Env
	svc     *banklink.Service
	sandbox *sandbox.Provider
	plaid   *plaidtest.Server
}

// startBank starts kluis with the sandbox provider, or with the Plaid
// adapter against an in-test Plaid when withPlaid is set; opts adjust Deps
// further.
func startBank(t *testing.T, withPlaid bool, opts ...apitest.Option) *bankEnv {
	t.Helper()
	be := &bankEnv{}
	if withPlaid {
		be.plaid = plaidtest.NewServer(t)
	}
	be.Env = apitest.Start(t, append([]apitest.Option{func(d *api.Deps) {
		var provider banklink.Provider
		if withPlaid {
			p, err := plaid.New(plaid.Options{ClientID: be.plaid.ClientID, Secret: be.plaid.Secret, BaseURL: be.plaid.URL, MaxRetries: -1})
			if err != nil {
				t.Fatal(err)
			}
			provider = p
		} else {
			sb, err := sandbox.New(sandbox.Options{DB: d.DB, Secret: sandboxSecret})
			if err != nil {
				t.Fatal(err)
			}
			be.sandbox, provider = sb, sb
		}
		svc, err := banklink.New(banklink.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Provider: provider,
			Keys: d.Pseudonyms.(*vault.SystemKeys), Logger: d.Logger})
		if err != nil {
			t.Fatal(err)
		}
		be.svc, d.BankLink = svc, svc
	}}, opts...)...)
	return be
}

func userToken(t *testing.T, sub string) string {
	t.Helper()
	return jwttest.Token(t, jwttest.WithSubject(sub))
}

// call sends a public request and returns the status, headers and body.
func (be *bankEnv) call(t *testing.T, method, path, token, body string) (int, http.Header, string) {
	t.Helper()
	ct := ""
	if body != "" {
		ct = "application/json"
	}
	return apitest.Do(t, nil, method, be.Public.URL+path, token, ct, body)
}

// want fails unless status is want, and decodes the body into v.
func want(t *testing.T, status, wantStatus int, body string, v any) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status = %d, want %d: %s", status, wantStatus, body)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(body), v); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
	}
}

type itemBody struct {
	ID          string `json:"id"`
	Institution struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"institution"`
	Status    string        `json:"status"`
	CreatedAt time.Time     `json:"created_at"`
	Accounts  []accountBody `json:"accounts"`
}

type accountBody struct {
	ID                 string  `json:"id"`
	ItemID             string  `json:"item_id"`
	Name               string  `json:"name"`
	Mask               string  `json:"mask"`
	Type               string  `json:"type"`
	Subtype            string  `json:"subtype"`
	VerificationStatus string  `json:"verification_status"`
	AccountNumberRef   *string `json:"account_number_ref"`
}

type sessionBody struct {
	ID        string    `json:"id"`
	LinkToken string    `json:"link_token"`
	Status    string    `json:"status"`
	ExpiresAt time.Time `json:"expires_at"`
}

// newSession starts a link session (update mode when itemID is set).
func (be *bankEnv) newSession(t *testing.T, tok, itemID string) sessionBody {
	t.Helper()
	body := `{"products":["auth"]}`
	if itemID != "" {
		body = `{"products":["auth"],"item_id":"` + itemID + `"}`
	}
	status, _, resp := be.call(t, "POST", "/v1/link/sessions", tok, body)
	var s sessionBody
	want(t, status, 201, resp, &s)
	if !strings.HasPrefix(s.ID, "lks_") || s.LinkToken == "" || s.Status != "created" || s.ExpiresAt.IsZero() {
		t.Fatalf("link session = %+v", s)
	}
	return s
}

// sandboxPublicToken completes the sandbox's Link UI.
func (be *bankEnv) sandboxPublicToken(t *testing.T, tok, sessionID, inst string) string {
	t.Helper()
	status, _, resp := be.call(t, "POST", "/v1/sandbox/public-token", tok, fmt.Sprintf(
		`{"link_session_id":%q,"institution_id":%q,"username":"user_good","password":"pass_good"}`, sessionID, inst))
	var pt struct {
		PublicToken string `json:"public_token"`
	}
	want(t, status, 201, resp, &pt)
	return pt.PublicToken
}

func (be *bankEnv) exchange(t *testing.T, tok, sessionID, publicToken string, wantStatus int) itemBody {
	t.Helper()
	status, _, resp := be.call(t, "POST", "/v1/link/sessions/"+sessionID+"/exchange", tok, fmt.Sprintf(`{"public_token":%q}`, publicToken))
	var out struct {
		Item itemBody `json:"item"`
	}
	want(t, status, wantStatus, resp, &out)
	return out.Item
}

// linkSandbox links an item at inst for the token's user.
func (be *bankEnv) linkSandbox(t *testing.T, tok, inst string) itemBody {
	t.Helper()
	s := be.newSession(t, tok, "")
	return be.exchange(t, tok, s.ID, be.sandboxPublicToken(t, tok, s.ID, inst), 201)
}

// internalItem reads an item on the internal listener.
func (be *bankEnv) internalItem(t *testing.T, id string) (int, struct {
	itemBody
	CredentialRef string `json:"credential_ref"`
}) {
	t.Helper()
	var out struct {
		itemBody
		CredentialRef string `json:"credential_ref"`
	}
	status, _, body := apitest.Do(t, be.ServiceClient(t, "payments"), "GET", be.Internal.URL+"/internal/v1/items/"+id, "", "", "")
	if status == 200 {
		want(t, status, 200, body, &out)
	}
	return status, out
}

// reveal opens a credential as the payments service.
func (be *bankEnv) reveal(t *testing.T, client *http.Client, ref string) (int, map[string]string) {
	t.Helper()
	status, _, body := apitest.Do(t, client, "POST", revealURL(be.Env, ref), "", "application/json", `{"purpose":"payment_initiation"}`)
	var out struct {
		Secret map[string]string `json:"secret"`
	}
	if status == 200 {
		want(t, status, 200, body, &out)
	}
	return status, out.Secret
}

func TestASandboxItemIsLinkedListedExchangedOnceAndDeleted(t *testing.T) {
	be := startBank(t, false)
	tok := userToken(t, "user_bank_1")
	s := be.newSession(t, tok, "")
	pub := be.sandboxPublicToken(t, tok, s.ID, sandbox.InstitutionAuth)
	it := be.exchange(t, tok, s.ID, pub, 201)
	if !strings.HasPrefix(it.ID, "itm_") || it.Status != "active" || it.Institution.ID != sandbox.InstitutionAuth ||
		it.Institution.Name == "" || len(it.Accounts) != 2 {
		t.Fatalf("item = %+v", it)
	}
	for _, a := range it.Accounts {
		if !regexp.MustCompile(`^[0-9]{4}$`).MatchString(a.Mask) || a.ItemID != it.ID || a.VerificationStatus != "unverified" ||
			a.Type != "depository" || a.AccountNumberRef != nil {
			t.Fatalf("account = %+v", a)
		}
	}

	t.Run("the same exchange again answers 200 with the same item", func(t *testing.T) {
		again := be.exchange(t, tok, s.ID, pub, 200)
		if again.ID != it.ID {
			t.Fatalf("second exchange gave %s, want %s", again.ID, it.ID)
		}
		var n int
		_ = be.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM items`).Scan(&n)
		if n != 1 {
			t.Fatalf("%d items, want 1", n)
		}
	})
	t.Run("list and get show the item and its accounts", func(t *testing.T) {
		status, _, body := be.call(t, "GET", "/v1/items", tok, "")
		var list struct {
			Items []itemBody `json:"items"`
		}
		want(t, status, 200, body, &list)
		if len(list.Items) != 1 || list.Items[0].ID != it.ID || len(list.Items[0].Accounts) != 2 {
			t.Fatalf("items = %+v", list)
		}
		status, _, body = be.call(t, "GET", "/v1/items/"+it.ID, tok, "")
		var got itemBody
		want(t, status, 200, body, &got)
		if got.ID != it.ID || strings.Contains(body, "cred_") || strings.Contains(body, "credential") {
			t.Fatalf("item = %s", body)
		}
		status, _, body = be.call(t, "GET", "/v1/accounts", tok, "")
		var accts struct {
			Accounts []accountBody `json:"accounts"`
		}
		want(t, status, 200, body, &accts)
		if len(accts.Accounts) != 2 || strings.Contains(body, "cred_") {
			t.Fatalf("accounts = %s", body)
		}
		status, _, body = be.call(t, "GET", "/v1/accounts/"+accts.Accounts[0].ID, tok, "")
		var acct accountBody
		want(t, status, 200, body, &acct)
		if acct.ID != accts.Accounts[0].ID || acct.ItemID != it.ID {
			t.Fatalf("account = %s", body)
		}
	})

	// The internal view carries references, and reveal opens them.
	status, internal := be.internalItem(t, it.ID)
	if status != 200 || !strings.HasPrefix(internal.CredentialRef, "cred_") || len(internal.Accounts) != 2 {
		t.Fatalf("internal item = %d %+v", status, internal)
	}
	client := be.ServiceClient(t, "payments")
	status, secret := be.reveal(t, client, internal.CredentialRef)
	accessToken := secret["access_token"]
	if status != 200 || !strings.HasPrefix(accessToken, "access-sandbox-") || secret["provider"] != "sandbox" {
		t.Fatalf("reveal access token = %d %v", status, secret)
	}
	var numbers []string
	var numberRefs []string
	for _, a := range internal.Accounts {
		if a.AccountNumberRef == nil {
			t.Fatalf("a linked account at an institution with auth has no number: %+v", a)
		}
		status, sec := be.reveal(t, client, *a.AccountNumberRef)
		if status != 200 || len(sec["account_number"]) != 12 || sec["routing_number"] == "" || !strings.HasSuffix(sec["account_number"], a.Mask) {
			t.Fatalf("reveal account number = %d %v (mask %s)", status, sec, a.Mask)
		}
		numbers, numberRefs = append(numbers, sec["account_number"]), append(numberRefs, *a.AccountNumberRef)
		// The blind index finds it without decrypting.
		found, err := be.Store.FindByBlindIndex(context.Background(), be.DB.Pool, accountnumber.Kind, sec["account_number"])
		if err != nil || len(found) != 1 || found[0].Ref != *a.AccountNumberRef {
			t.Fatalf("blind index lookup = %+v, %v", found, err)
		}
	}

	t.Run("neither the access token nor an account number is in the logs or the database in the clear", func(t *testing.T) {
		dump := pgDump(t, be.DBURL)
		logs := be.Logs.String()
		for _, secret := range append([]string{accessToken, pub}, numbers...) {
			if strings.Contains(logs, secret) {
				t.Fatal("a secret reached the logs")
			}
			if strings.Contains(dump, secret) {
				t.Fatal("a secret is in the database dump in the clear")
			}
		}
	})

	t.Run("delete revokes at the provider, destroys the credentials, and the item is gone", func(t *testing.T) {
		status, _, body := be.call(t, "DELETE", "/v1/items/"+it.ID, tok, "")
		want(t, status, 204, body, nil)
		if _, err := be.sandbox.GetAccounts(context.Background(), accessToken); err == nil || !strings.Contains(err.Error(), banklink.CodeInvalidToken) {
			t.Fatalf("the access token still works at the provider: %v", err)
		}
		for _, ref := range append(numberRefs, internal.CredentialRef) {
			if status, _ := be.reveal(t, client, ref); status != 404 {
				t.Fatalf("reveal of a destroyed credential = %d, want 404", status)
			}
		}
		status, _, body = be.call(t, "GET", "/v1/items/"+it.ID, tok, "")
		mustError(t, status, body, 404, "not_found")
		status, _, body = be.call(t, "DELETE", "/v1/items/"+it.ID, tok, "")
		mustError(t, status, body, 404, "not_found")
		status, _, body = be.call(t, "GET", "/v1/accounts", tok, "")
		if status != 200 || strings.Contains(body, "acc_") {
			t.Fatalf("accounts after delete = %d %s", status, body)
		}
		if status, _ := be.internalItem(t, it.ID); status != 404 {
			t.Fatalf("internal item after delete = %d", status)
		}
		if n := auditCount(t, be.Env, `action = 'item.removed' AND target = $1`, it.ID); n != 1 {
			t.Fatalf("item.removed audited %d times", n)
		}
	})
}

// withoutRequestID drops the request id from an error body.
func withoutRequestID(body string) string {
	return regexp.MustCompile(`"request_id":"[^"]*"`).ReplaceAllString(body, `"request_id":""`)
}

// foreignCase is a request about someone else's object: path (or, when it
// has no %s, body) takes the id, real (theirs) or fake (random).
type foreignCase struct{ name, method, path, real, fake, body string }

// random is an id of prefix that names nothing.
func random(prefix string) string { return prefix + strings.Repeat("a", 32) }

// answersAsRandomIDs checks that each case, sent with tok, answers 404 and
// exactly as the same request with a random id does.
func (be *bankEnv) answersAsRandomIDs(t *testing.T, tok string, cases []foreignCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := func(id string) (int, string) {
				path, body := tc.path, tc.body
				if strings.Contains(path, "%s") {
					path = fmt.Sprintf(path, id)
				} else {
					body = fmt.Sprintf(body, id)
				}
				status, _, resp := be.call(t, tc.method, path, tok, body)
				return status, resp
			}
			s1, b1 := req(tc.real)
			s2, b2 := req(tc.fake)
			mustError(t, s1, b1, 404, "not_found")
			if s1 != s2 || withoutRequestID(b1) != withoutRequestID(b2) {
				t.Fatalf("another's object: %d %s\na random id:      %d %s", s1, b1, s2, b2)
			}
		})
	}
}

func TestAnotherUsersObjectsAnswerExactlyAsRandomIDsAndChangeNothing(t *testing.T) {
	be := startBank(t, false)
	owner, other := userToken(t, "user_owner"), userToken(t, "user_other")
	it := be.linkSandbox(t, owner, sandbox.InstitutionAuth)
	open := be.newSession(t, owner, "")
	be.linkSandbox(t, other, sandbox.InstitutionAuth) // the other user exists and has items of their own
	cases := []foreignCase{
		{"get item", "GET", "/v1/items/%s", it.ID, random("itm_"), ""},
		{"delete item", "DELETE", "/v1/items/%s", it.ID, random("itm_"), ""},
		{"get account", "GET", "/v1/accounts/%s", it.Accounts[0].ID, random("acc_"), ""},
		{"exchange a session", "POST", "/v1/link/sessions/%s/exchange", open.ID, random("lks_"), `{"public_token":"public-sandbox-x"}`},
		{"update mode for an item", "POST", "/v1/link/sessions", it.ID, random("itm_"), `{"item_id":"%s"}`},
		{"sandbox public token", "POST", "/v1/sandbox/public-token", open.ID, random("lks_"),
			`{"link_session_id":"%s","institution_id":"ins_sandbox","username":"user_good","password":"pass_good"}`},
		{"fire a webhook", "POST", "/v1/sandbox/items/%s/fire-webhook", it.ID, random("itm_"), `{"code":"ERROR","error_code":"ITEM_LOGIN_REQUIRED"}`},
	}
	be.answersAsRandomIDs(t, other, cases)
	// Nothing changed for the owner.
	status, _, body := be.call(t, "GET", "/v1/items/"+it.ID, owner, "")
	var got itemBody
	want(t, status, 200, body, &got)
	if got.Status != "active" || len(got.Accounts) != 2 {
		t.Fatalf("the owner's item changed: %+v", got)
	}
	var sessionStatus string
	_ = be.DB.Pool.QueryRow(context.Background(), `SELECT status FROM link_sessions WHERE id = $1`, open.ID).Scan(&sessionStatus)
	if sessionStatus != "created" {
		t.Fatalf("the owner's session is %s", sessionStatus)
	}
	if _, internal := be.internalItem(t, it.ID); internal.CredentialRef == "" {
		t.Fatal("the owner's credential is gone")
	}
}

func TestTwentyConcurrentExchangesOfOnePublicTokenCreateOneItem(t *testing.T) {
	be := startBank(t, false)
	tok := userToken(t, "user_race")
	s := be.newSession(t, tok, "")
	pub := be.sandboxPublicToken(t, tok, s.ID, sandbox.InstitutionAuth)
	var wg sync.WaitGroup
	statuses := make([]int, 20)
	ids := make([]string, 20)
	start := make(chan struct{})
	for i := range statuses {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			status, _, body := be.call(t, "POST", "/v1/link/sessions/"+s.ID+"/exchange", tok, fmt.Sprintf(`{"public_token":%q}`, pub))
			var out struct {
				Item itemBody `json:"item"`
			}
			_ = json.Unmarshal([]byte(body), &out)
			statuses[i], ids[i] = status, out.Item.ID
		}(i)
	}
	close(start)
	wg.Wait()
	created := 0
	for i := range statuses {
		switch statuses[i] {
		case 201:
			created++
		case 200:
		default:
			t.Fatalf("exchange %d = %d", i, statuses[i])
		}
		if ids[i] != ids[0] || ids[i] == "" {
			t.Fatalf("exchanges gave different items: %v", ids)
		}
	}
	var items, accounts int
	_ = be.DB.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM accounts)`).Scan(&items, &accounts)
	if created != 1 || items != 1 || accounts != 2 {
		t.Fatalf("%d created answers, %d items, %d accounts; want 1, 1, 2", created, items, accounts)
	}
	if n := auditCount(t, be.Env, `action = 'item.linked'`); n != 1 {
		t.Fatalf("item.linked audited %d times", n)
	}
}

func TestSandboxLoginsAndInstitutions(t *testing.T) {
	be := startBank(t, false)
	tok := userToken(t, "user_logins")
	cases := []struct {
		name, inst, user, pass string
		status                 int
		code                   string
	}{
		{"a bad password is 422 invalid_credentials", sandbox.InstitutionAuth, "user_good", "pass_bad", 422, "invalid_credentials"},
		{"an unknown user is 422 invalid_credentials", sandbox.InstitutionAuth, "someone", "pass_good", 422, "invalid_credentials"},
		{"an institution that is down is 503 with Retry-After", sandbox.InstitutionDown, "user_good", "pass_good", 503, "unavailable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := be.newSession(t, tok, "")
			status, h, body := be.call(t, "POST", "/v1/sandbox/public-token", tok, fmt.Sprintf(
				`{"link_session_id":%q,"institution_id":%q,"username":%q,"password":%q}`, s.ID, tc.inst, tc.user, tc.pass))
			mustError(t, status, body, tc.status, tc.code)
			if tc.status == 503 && h.Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
			if strings.Contains(body, tc.pass) {
				t.Fatal("the password is echoed")
			}
			// The session stays open for another try.
			be.sandboxPublicToken(t, tok, s.ID, sandbox.InstitutionAuth)
		})
	}
	t.Run("an institution without instant auth links accounts without numbers", func(t *testing.T) {
		it := be.linkSandbox(t, tok, sandbox.InstitutionNoAuth)
		status, internal := be.internalItem(t, it.ID)
		if status != 200 || len(internal.Accounts) != 2 {
			t.Fatalf("internal item = %d %+v", status, internal)
		}
		for _, a := range internal.Accounts {
			if a.AccountNumberRef != nil || len(a.Mask) != 4 {
				t.Fatalf("account = %+v, want a mask and no number", a)
			}
		}
	})
	t.Run("a public token of another session does not exchange", func(t *testing.T) {
		s1, s2 := be.newSession(t, tok, ""), be.newSession(t, tok, "")
		pub := be.sandboxPublicToken(t, tok, s1.ID, sandbox.InstitutionAuth)
		be.sandboxPublicToken(t, tok, s2.ID, sandbox.InstitutionAuth)
		status, _, body := be.call(t, "POST", "/v1/link/sessions/"+s2.ID+"/exchange", tok, fmt.Sprintf(`{"public_token":%q}`, pub))
		mustError(t, status, body, 422, "invalid_token")
	})
}

// webhookPost sends a provider webhook to /webhooks/{provider}.
func (be *bankEnv) webhookPost(t *testing.T, provider string, h http.Header, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", be.Public.URL+"/webhooks/"+provider, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h.Clone()
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, sb.String()
}

// webhookPostH is webhookPost that also answers the response headers.
func (be *bankEnv) webhookPostH(t *testing.T, provider string, h http.Header, body []byte) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest("POST", be.Public.URL+"/webhooks/"+provider, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h.Clone()
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(raw)
}

func (be *bankEnv) itemStatus(t *testing.T, id string) string {
	t.Helper()
	var s string
	if err := be.DB.Pool.QueryRow(context.Background(), `SELECT status FROM items WHERE id = $1`, id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (be *bankEnv) webhookEvents(t *testing.T) int {
	t.Helper()
	var n int
	_ = be.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM provider_webhook_events`).Scan(&n)
	return n
}

func TestAnItemNeedsItsLoginByWebhookAndIsRepairedInUpdateMode(t *testing.T) {
	be := startBank(t, false)
	tok := userToken(t, "user_login_required")
	it := be.linkSandbox(t, tok, sandbox.InstitutionAuth)

	status, _, body := be.call(t, "POST", "/v1/sandbox/items/"+it.ID+"/fire-webhook", tok, `{"code":"ERROR","error_code":"ITEM_LOGIN_REQUIRED"}`)
	want(t, status, 200, body, nil)
	if got := be.itemStatus(t, it.ID); got != "login_required" {
		t.Fatalf("item is %s after the webhook", got)
	}
	if n := auditCount(t, be.Env, `action = 'item.login_required' AND target = $1 AND actor_kind = 'provider'`, it.ID); n != 1 {
		t.Fatalf("item.login_required audited %d times", n)
	}
	var events int
	if err := be.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox
		WHERE type = 'item.login_required' AND payload->'data'->>'item_id' = $1`, it.ID).Scan(&events); err != nil || events != 1 {
		t.Fatalf("item.login_required events for the apps = %d (%v), want 1", events, err)
	}

	s := be.newSession(t, tok, it.ID)
	pub := be.sandboxPublicToken(t, tok, s.ID, "")
	repaired := be.exchange(t, tok, s.ID, pub, 201)
	if repaired.ID != it.ID || repaired.Status != "active" {
		t.Fatalf("after update mode: %+v", repaired)
	}
	if again := be.exchange(t, tok, s.ID, pub, 200); again.ID != it.ID {
		t.Fatalf("update exchange again gave %s", again.ID)
	}

	t.Run("new accounts by webhook are added", func(t *testing.T) {
		status, _, body := be.call(t, "POST", "/v1/sandbox/items/"+it.ID+"/fire-webhook", tok, `{"code":"NEW_ACCOUNTS_AVAILABLE"}`)
		want(t, status, 200, body, nil)
		status, _, body = be.call(t, "GET", "/v1/items/"+it.ID, tok, "")
		var got itemBody
		want(t, status, 200, body, &got)
		if len(got.Accounts) != 3 {
			t.Fatalf("accounts after NEW_ACCOUNTS_AVAILABLE = %d, want 3", len(got.Accounts))
		}
	})
	t.Run("an unknown event type is recorded and ignored", func(t *testing.T) {
		// LOGIN_REQUIRED was the sandbox's own code before its webhooks
		// took Plaid's shapes; Plaid has no such ITEM code.
		for _, code := range []string{"SOMETHING_NEW", "LOGIN_REQUIRED"} {
			before := be.webhookEvents(t)
			status, _, body := be.call(t, "POST", "/v1/sandbox/items/"+it.ID+"/fire-webhook", tok, `{"code":"`+code+`"}`)
			want(t, status, 200, body, nil)
			if be.webhookEvents(t) != before+1 || be.itemStatus(t, it.ID) != "active" || !strings.Contains(body, `"kind":"unknown"`) {
				t.Fatalf("the unknown event %s was not recorded, or changed the item: %s", code, body)
			}
		}
	})
	t.Run("a signed webhook to the public route is applied once; its duplicate and forgeries change nothing", func(t *testing.T) {
		h, raw, err := be.sandbox.SignedWebhook(context.Background(), banklink.SandboxWebhook{ProviderItemID: providerItemID(t, be, it.ID), Code: "ERROR"})
		if err != nil {
			t.Fatal(err)
		}
		forged := h.Clone()
		forged.Set(sandbox.SignatureHeader, strings.Replace(h.Get(sandbox.SignatureHeader), "v1=", "v1=00", 1))
		stale := h.Clone()
		stale.Set(sandbox.SignatureHeader, be.sandbox.Sign(time.Now().Add(-6*time.Minute), raw))
		for name, hh := range map[string]http.Header{"forged": forged, "stale": stale, "unsigned": {}} {
			before := be.webhookEvents(t)
			status, body := be.webhookPost(t, "sandbox", hh, raw)
			mustErrorReason(t, status, body, 401, "unauthenticated", "bad_signature")
			if be.webhookEvents(t) != before || be.itemStatus(t, it.ID) != "active" {
				t.Fatalf("a %s webhook had an effect", name)
			}
		}
		status, body := be.webhookPost(t, "sandbox", h, raw)
		want(t, status, 200, body, nil)
		if be.itemStatus(t, it.ID) != "login_required" {
			t.Fatal("the webhook was not applied")
		}
		before := be.webhookEvents(t)
		status, body = be.webhookPost(t, "sandbox", h, raw)
		want(t, status, 200, body, nil)
		if be.webhookEvents(t) != before || !strings.Contains(body, `"duplicate":true`) {
			t.Fatalf("the duplicate was recorded again: %s", body)
		}
		status, body = be.webhookPost(t, "plaid", h, raw)
		mustError(t, status, body, 404, "not_found")
	})
	t.Run("permission revoked by webhook revokes the item", func(t *testing.T) {
		status, _, body := be.call(t, "POST", "/v1/sandbox/items/"+it.ID+"/fire-webhook", tok, `{"code":"USER_PERMISSION_REVOKED"}`)
		want(t, status, 200, body, nil)
		if got := be.itemStatus(t, it.ID); got != "revoked" {
			t.Fatalf("item is %s", got)
		}
		// Unlinking a revoked item still works: the provider no longer knows it.
		status, _, body = be.call(t, "DELETE", "/v1/items/"+it.ID, tok, "")
		want(t, status, 204, body, nil)
	})
}

func providerItemID(t *testing.T, be *bankEnv, itemID string) string {
	t.Helper()
	var id string
	if err := be.DB.Pool.QueryRow(context.Background(), `SELECT provider_item_id FROM items WHERE id = $1`, itemID).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// linkPlaid links an item at the in-test Plaid.
func (be *bankEnv) linkPlaid(t *testing.T, tok, inst string) itemBody {
	t.Helper()
	s := be.newSession(t, tok, "")
	pub, err := be.plaid.CompleteLink(s.LinkToken, inst)
	if err != nil {
		t.Fatal(err)
	}
	return be.exchange(t, tok, s.ID, pub, 201)
}

func TestPlaidLinkExchangeListDelete(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_plaid")
	if status, _, _ := be.call(t, "POST", "/v1/sandbox/public-token", tok, `{}`); status != 404 {
		t.Fatalf("the sandbox route exists with Plaid: %d", status)
	}
	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	if it.Institution.ID != plaidtest.InstitutionAuth || len(it.Accounts) != 2 || it.Status != "active" {
		t.Fatalf("item = %+v", it)
	}
	status, _, body := be.call(t, "GET", "/v1/items", tok, "")
	if status != 200 || !strings.Contains(body, it.ID) {
		t.Fatalf("items = %d %s", status, body)
	}
	pid := providerItemID(t, be, it.ID)

	t.Run("a provider that fails on delete is 503 and nothing changes", func(t *testing.T) {
		be.plaid.FailNext(plaidtest.EndpointItemRemove, 1, "INTERNAL_SERVER_ERROR")
		status, h, body := be.call(t, "DELETE", "/v1/items/"+it.ID, tok, "")
		mustError(t, status, body, 503, "unavailable")
		if h.Get("Retry-After") == "" || be.itemStatus(t, it.ID) != "active" {
			t.Fatal("want 503 with Retry-After and the item unchanged")
		}
		if _, ok := be.plaid.Item(pid); !ok {
			t.Fatal("the item is gone at Plaid")
		}
	})
	status, _, body = be.call(t, "DELETE", "/v1/items/"+it.ID, tok, "")
	want(t, status, 204, body, nil)
	if _, ok := be.plaid.Item(pid); ok {
		t.Fatal("the item is still at Plaid")
	}
	status, _, body = be.call(t, "GET", "/v1/items/"+it.ID, tok, "")
	mustError(t, status, body, 404, "not_found")
	if strings.Contains(be.Logs.String(), plaidtest.Secret) {
		t.Fatal("the Plaid secret reached the logs")
	}
}

func TestPlaidWebhooksAreVerifiedAndAppliedOnce(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_plaid_webhooks")
	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	pid := providerItemID(t, be, it.ID)
	valid := be.plaid.LoginRequiredWebhook(pid)

	for _, forgery := range []plaidtest.Forgery{plaidtest.HS256, plaidtest.AlgNone, plaidtest.StaleIat, plaidtest.BodyMismatch,
		plaidtest.UnknownKid, plaidtest.RS256, plaidtest.WrongKey} {
		t.Run(forgery.String()+" is 401 and has no effect", func(t *testing.T) {
			w := be.plaid.Sign(valid.Body, forgery)
			before := be.webhookEvents(t)
			status, body := be.webhookPost(t, "plaid", w.Header, w.Body)
			mustErrorReason(t, status, body, 401, "unauthenticated", "bad_signature")
			if be.webhookEvents(t) != before || be.itemStatus(t, it.ID) != "active" {
				t.Fatal("a forged webhook had an effect")
			}
		})
	}
	status, body := be.webhookPost(t, "plaid", valid.Header, valid.Body)
	want(t, status, 200, body, nil)
	if be.itemStatus(t, it.ID) != "login_required" || be.webhookEvents(t) != 1 {
		t.Fatal("the valid webhook was not applied once")
	}
	status, body = be.webhookPost(t, "plaid", valid.Header, valid.Body)
	want(t, status, 200, body, nil)
	if be.webhookEvents(t) != 1 || auditCount(t, be.Env, `action = 'item.login_required'`) != 1 {
		t.Fatal("the duplicate had an effect")
	}
	unknown := be.plaid.FireWebhook(pid, "TRANSACTIONS", "DEFAULT_UPDATE", nil)
	status, body = be.webhookPost(t, "plaid", unknown.Header, unknown.Body)
	want(t, status, 200, body, nil)
	var outcome string
	_ = be.DB.Pool.QueryRow(context.Background(), `SELECT outcome FROM provider_webhook_events WHERE kind = 'unknown'`).Scan(&outcome)
	if outcome != "ignored" {
		t.Fatalf("unknown event outcome = %q", outcome)
	}
}

// TestForgedKidsAfterAPlaidKeyRotationDoNotGetGenuineWebhooksRefused is the
// attack of issue 11 item 3 over HTTP: after Plaid rotates its key, forged
// webhooks with random kids spend the shared budget for fetching unknown
// keys. They are 401 (Plaid does not know the kid) or 503 with Retry-After
// (not checked yet); the genuine webhook is never 401, and is applied.
func TestForgedKidsAfterAPlaidKeyRotationDoNotGetGenuineWebhooksRefused(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_plaid_rotation")
	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	pid := providerItemID(t, be, it.ID)
	be.plaid.RotateKey()

	deferred := 0
	for i := range 12 {
		body := fmt.Appendf(nil, `{"webhook_type":"ITEM","webhook_code":"USER_PERMISSION_REVOKED","item_id":"forged-%d"}`, i)
		w := be.plaid.Sign(body, plaidtest.UnknownKid)
		status, h, resp := be.webhookPostH(t, "plaid", w.Header, w.Body)
		switch status {
		case 401:
			mustErrorReason(t, status, resp, 401, "unauthenticated", "bad_signature")
		case 503:
			mustErrorReason(t, status, resp, 503, "unavailable", "webhook_key_unavailable")
			if h.Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
			deferred++
		default:
			t.Fatalf("a forged webhook got %d: %s", status, resp)
		}
	}
	if deferred == 0 {
		t.Fatal("the flood did not spend the shared budget")
	}
	genuine := be.plaid.FireWebhook(pid, "ITEM", "USER_PERMISSION_REVOKED", nil)
	status, body := be.webhookPost(t, "plaid", genuine.Header, genuine.Body)
	want(t, status, 200, body, nil)
	if got := be.itemStatus(t, it.ID); got != "revoked" {
		t.Fatalf("item is %s after the genuine webhook", got)
	}
}

func TestRotationDuringRevealsChangesTheTokenExactlyOnce(t *testing.T) {
	be := startBank(t, false)
	tok := userToken(t, "user_rotation")
	it := be.linkSandbox(t, tok, sandbox.InstitutionAuth)
	_, internal := be.internalItem(t, it.ID)
	client := be.ServiceClient(t, "payments")
	_, sec := be.reveal(t, client, internal.CredentialRef)
	oldToken := sec["access_token"]
	if _, err := be.DB.Pool.Exec(context.Background(), `UPDATE items SET access_token_rotated_at = now() - interval '100 days'`); err != nil {
		t.Fatal(err)
	}

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	seqs := make([][]string, 8)
	reveals := 0
	for g := range seqs {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for ctx.Err() == nil {
				status, in := be.internalItem(t, it.ID)
				if status != 200 {
					t.Errorf("internal item = %d", status)
					return
				}
				if in.CredentialRef != internal.CredentialRef {
					t.Errorf("the item's credential_ref changed across the rotation")
					return
				}
				status, sec := be.reveal(t, client, in.CredentialRef)
				if status != 200 {
					t.Errorf("reveal = %d", status)
					return
				}
				mu.Lock()
				seqs[g] = append(seqs[g], sec["access_token"])
				reveals++
				mu.Unlock()
			}
		}(g)
	}
	waitFor := func(n int) {
		for {
			mu.Lock()
			r := reveals
			mu.Unlock()
			if r >= n || t.Failed() {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(20)
	res, err := be.svc.RotateAccessTokens(ctx, 90*24*time.Hour, 0)
	mu.Lock()
	after := reveals
	mu.Unlock()
	waitFor(after + 40)
	stop()
	wg.Wait()
	if err != nil || res.Rotated != 1 || res.Failed != 0 {
		t.Fatalf("rotation = %+v, %v", res, err)
	}
	distinct := map[string]bool{}
	for g, seq := range seqs {
		changes := 0
		for i, tk := range seq {
			distinct[tk] = true
			if i > 0 && tk != seq[i-1] {
				changes++
				if seq[i-1] != oldToken {
					t.Fatalf("goroutine %d went from the new token back to another", g)
				}
			}
		}
		if changes > 1 {
			t.Fatalf("goroutine %d saw the token change %d times", g, changes)
		}
	}
	if len(distinct) != 2 || !distinct[oldToken] {
		t.Fatalf("reveals saw %d distinct tokens, want the old and one new", len(distinct))
	}
	// The ref a service held before the rotation reveals the new token,
	// which works at the provider; the old one does not.
	_, now := be.internalItem(t, it.ID)
	if now.CredentialRef != internal.CredentialRef {
		t.Fatalf("credential_ref changed across rotation: %s → %s", internal.CredentialRef, now.CredentialRef)
	}
	_, sec = be.reveal(t, client, internal.CredentialRef)
	if sec["access_token"] == oldToken {
		t.Fatal("the ref held before the rotation still reveals the old token")
	}
	if _, err := be.sandbox.GetAccounts(context.Background(), sec["access_token"]); err != nil {
		t.Fatalf("the new token does not work: %v", err)
	}
	if _, err := be.sandbox.GetAccounts(context.Background(), oldToken); err == nil {
		t.Fatal("the old token still works")
	}
	// A second run finds nothing due.
	if res, err := be.svc.RotateAccessTokens(context.Background(), 90*24*time.Hour, 0); err != nil || res.Rotated != 0 {
		t.Fatalf("second rotation = %+v, %v", res, err)
	}
}

func TestRotationFailuresAreCountedAndRetriedNextRun(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_rotation_fail")
	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	if _, err := be.DB.Pool.Exec(context.Background(), `UPDATE items SET access_token_rotated_at = now() - interval '100 days'`); err != nil {
		t.Fatal(err)
	}
	be.plaid.FailNext(plaidtest.EndpointAccessTokenInvalidate, 1, "INTERNAL_SERVER_ERROR")
	res, err := be.svc.RotateAccessTokens(context.Background(), 90*24*time.Hour, 0)
	if err != nil || res.Failed != 1 || res.Rotated != 0 {
		t.Fatalf("first run = %+v, %v", res, err)
	}
	res, err = be.svc.RotateAccessTokens(context.Background(), 90*24*time.Hour, 0)
	if err != nil || res.Failed != 0 || res.Rotated != 1 {
		t.Fatalf("second run = %+v, %v", res, err)
	}
	_, internal := be.internalItem(t, it.ID)
	_, sec := be.reveal(t, be.ServiceClient(t, "payments"), internal.CredentialRef)
	if _, ok := be.plaid.ItemByAccessToken(sec["access_token"]); !ok {
		t.Fatal("the stored token is not the live one at Plaid")
	}
}

func TestAnExpiredLinkSessionDoesNotExchangeAndTheJobMarksIt(t *testing.T) {
	be := startBank(t, false)
	tok := userToken(t, "user_expiry")
	s := be.newSession(t, tok, "")
	if d := time.Until(s.ExpiresAt); d > banklink.NewSessionTTL || d < banklink.NewSessionTTL-time.Minute {
		t.Fatalf("a new session expires in %v, want 4h", d)
	}
	pub := be.sandboxPublicToken(t, tok, s.ID, sandbox.InstitutionAuth)
	var exp time.Time
	_ = be.DB.Pool.QueryRow(context.Background(), `SELECT expires_at FROM link_sessions WHERE id = $1`, s.ID).Scan(&exp)
	if d := time.Until(exp); d > banklink.PublicTokenTTL || d < banklink.PublicTokenTTL-time.Minute {
		t.Fatalf("with a public token the session expires in %v, want 30m", d)
	}
	if _, err := be.DB.Pool.Exec(context.Background(), `UPDATE link_sessions SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	status, _, body := be.call(t, "POST", "/v1/link/sessions/"+s.ID+"/exchange", tok, fmt.Sprintf(`{"public_token":%q}`, pub))
	mustError(t, status, body, 409, "link_session_closed")
	n, err := be.svc.ExpireLinkSessions(context.Background(), 0)
	if err != nil || n != 1 {
		t.Fatalf("expired %d sessions, %v", n, err)
	}
	var st string
	_ = be.DB.Pool.QueryRow(context.Background(), `SELECT status FROM link_sessions WHERE id = $1`, s.ID).Scan(&st)
	if st != "expired" {
		t.Fatalf("session is %s", st)
	}
	var items int
	_ = be.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM items`).Scan(&items)
	if items != 0 {
		t.Fatal("an expired session made an item")
	}
}
