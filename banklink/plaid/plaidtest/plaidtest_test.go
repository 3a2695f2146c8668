package plaidtest_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
)

// recorder is a testing.TB that records Errorf instead of failing, to test
// that the server reports what it should.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) reported() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

// post sends body to the server's endpoint with the given headers (the
// right ones when h is nil) and decodes the answer.
func post(t *testing.T, srv *plaidtest.Server, endpoint string, h http.Header, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+endpoint, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if h == nil {
		h = http.Header{}
		h.Set("Content-Type", "application/json")
		h.Set("PLAID-CLIENT-ID", srv.ClientID)
		h.Set("PLAID-SECRET", srv.Secret)
		h.Set("Plaid-Version", plaidtest.APIVersion)
	}
	req.Header = h
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return res.StatusCode, out
}

func TestTheSpecCatchesBadRequests(t *testing.T) {
	t.Parallel()
	spec := plaidtest.LoadSpec(t)
	good := http.Header{}
	good.Set("Content-Type", "application/json")
	good.Set("PLAID-CLIENT-ID", "c")
	good.Set("PLAID-SECRET", "s")
	good.Set("Plaid-Version", plaidtest.APIVersion)
	noSecret := good.Clone()
	noSecret.Del("PLAID-SECRET")
	tests := []struct {
		name     string
		endpoint string
		header   http.Header
		body     string
		ok       bool
	}{
		{"a complete link token request", plaidtest.EndpointLinkTokenCreate, good, `{"client_name":"kluis","language":"en","country_codes":["US"],"user":{"client_user_id":"u1"},"products":["auth"]}`, true},
		{"a link token request without client_name", plaidtest.EndpointLinkTokenCreate, good, `{"language":"en","country_codes":["US"],"user":{"client_user_id":"u1"}}`, false},
		{"a user without client_user_id", plaidtest.EndpointLinkTokenCreate, good, `{"client_name":"kluis","language":"en","country_codes":["US"],"user":{}}`, false},
		{"a country Plaid does not serve", plaidtest.EndpointLinkTokenCreate, good, `{"client_name":"kluis","language":"en","country_codes":["ZA"],"user":{"client_user_id":"u1"}}`, false},
		{"a product that does not exist", plaidtest.EndpointLinkTokenCreate, good, `{"client_name":"kluis","language":"en","country_codes":["US"],"user":{"client_user_id":"u1"},"products":["everything"]}`, false},
		{"a field the spec does not define", plaidtest.EndpointAccountsGet, good, `{"access_token":"a","verbose":true}`, false},
		{"a nested field the spec does not define", plaidtest.EndpointLinkTokenCreate, good, `{"client_name":"kluis","language":"en","country_codes":["US"],"user":{"client_user_id":"u1","nickname":"x"}}`, false},
		{"an exchange without its token", plaidtest.EndpointPublicTokenExchange, good, `{}`, false},
		{"a missing secret header", plaidtest.EndpointAccountsGet, noSecret, `{"access_token":"a"}`, false},
		{"a key request", plaidtest.EndpointWebhookKeyGet, good, `{"key_id":"k"}`, true},
		{"an endpoint the spec lacks", "/nope", good, `{}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1"+tt.endpoint, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header = tt.header
			v := spec.ValidateRequest(req, tt.endpoint, []byte(tt.body))
			if tt.ok && len(v) > 0 {
				t.Errorf("violations for a good request: %v", v)
			}
			if !tt.ok && len(v) == 0 {
				t.Error("no violation found")
			}
		})
	}
}

func TestTheSpecCatchesBadAnswers(t *testing.T) {
	t.Parallel()
	spec := plaidtest.LoadSpec(t)
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1/item/public_token/exchange", nil)
	h := http.Header{"Content-Type": {"application/json"}}
	if v := spec.ValidateResponse(req, plaidtest.EndpointPublicTokenExchange, 200, h, []byte(`{"access_token":"a","item_id":"i","request_id":"r"}`)); len(v) > 0 {
		t.Errorf("violations for a good answer: %v", v)
	}
	if v := spec.ValidateResponse(req, plaidtest.EndpointPublicTokenExchange, 200, h, []byte(`{"item_id":"i","request_id":"r"}`)); len(v) == 0 {
		t.Error("an answer without access_token passed")
	}
	if v := spec.ValidateResponse(req, plaidtest.EndpointPublicTokenExchange, 400, h, []byte(`{"error_type":"NOT_A_TYPE","error_code":"X","error_message":"m","display_message":null}`)); len(v) == 0 {
		t.Error("an error of an unknown type passed")
	}
}

func TestTheServerReportsSpecViolationsAndKeysInTheBody(t *testing.T) {
	t.Parallel()
	rec := &recorder{TB: t}
	srv := plaidtest.NewServer(rec, plaidtest.WithSpec(plaidtest.LoadSpec(t)))
	status, _ := post(t, srv, plaidtest.EndpointAccountsGet, nil, `{"access_token":"a","extra":1}`)
	if status != http.StatusBadRequest || len(rec.reported()) != 1 {
		t.Errorf("status %d, reported %v; want 400 and one report", status, rec.reported())
	}
	status, body := post(t, srv, plaidtest.EndpointAccountsGet, nil, `{"access_token":"a","secret":"s"}`)
	if status != http.StatusBadRequest || len(rec.reported()) != 2 {
		t.Errorf("status %d %v, reported %v; want 400 and a second report", status, body, rec.reported())
	}
	if srv.Validated(plaidtest.EndpointAccountsGet) != 2 {
		t.Errorf("validated %d requests, want 2", srv.Validated(plaidtest.EndpointAccountsGet))
	}
}

func TestTheServerChecksHeadersAsPlaidDoes(t *testing.T) {
	t.Parallel()
	srv := plaidtest.NewServer(t, plaidtest.WithSpec(plaidtest.LoadSpec(t)))
	base := func() http.Header {
		h := http.Header{}
		h.Set("Content-Type", "application/json")
		h.Set("PLAID-CLIENT-ID", srv.ClientID)
		h.Set("PLAID-SECRET", srv.Secret)
		h.Set("Plaid-Version", plaidtest.APIVersion)
		return h
	}
	wrongSecret := base()
	wrongSecret.Set("PLAID-SECRET", "nope")
	wrongVersion := base()
	wrongVersion.Set("Plaid-Version", "2018-05-22")
	tests := []struct {
		name   string
		header http.Header
		code   string
	}{
		{"a wrong secret", wrongSecret, "INVALID_API_KEYS"},
		{"another API version", wrongVersion, "INVALID_HEADERS"},
		{"good headers and an unknown token", base(), "INVALID_ACCESS_TOKEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := post(t, srv, plaidtest.EndpointAccountsGet, tt.header, `{"access_token":"access-sandbox-x"}`)
			if status != http.StatusBadRequest || body["error_code"] != tt.code || body["request_id"] == "" {
				t.Errorf("answer %d %v, want 400 %s", status, body, tt.code)
			}
		})
	}
}

func TestTokensFollowPlaidsRules(t *testing.T) {
	t.Parallel()
	clock := &manualClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	srv := plaidtest.NewServer(t, plaidtest.WithClock(clock), plaidtest.WithSpec(plaidtest.LoadSpec(t)))
	if _, err := srv.CreatePublicToken("ins_nope"); err == nil {
		t.Error("a public token for an unknown institution")
	}
	public, err := srv.CreatePublicToken(plaidtest.InstitutionAuth)
	if err != nil {
		t.Fatal(err)
	}
	status, ex := post(t, srv, plaidtest.EndpointPublicTokenExchange, nil, `{"public_token":"`+public+`"}`)
	if status != http.StatusOK {
		t.Fatalf("exchange: %d %v", status, ex)
	}
	if status, body := post(t, srv, plaidtest.EndpointPublicTokenExchange, nil, `{"public_token":"`+public+`"}`); status != http.StatusBadRequest || body["error_code"] != "INVALID_PUBLIC_TOKEN" {
		t.Errorf("second exchange: %d %v", status, body)
	}
	late, _ := srv.CreatePublicToken(plaidtest.InstitutionAuth)
	clock.advance(plaidtest.PublicTokenTTL + time.Second)
	if status, body := post(t, srv, plaidtest.EndpointPublicTokenExchange, nil, `{"public_token":"`+late+`"}`); status != http.StatusBadRequest || body["error_code"] != "INVALID_PUBLIC_TOKEN" {
		t.Errorf("expired exchange: %d %v", status, body)
	}

	access := ex["access_token"].(string)
	item, ok := srv.ItemByAccessToken(access)
	if !ok || item.ID != ex["item_id"] || len(item.Accounts) != 2 {
		t.Fatalf("item %+v", item)
	}
	status, inv := post(t, srv, plaidtest.EndpointAccessTokenInvalidate, nil, `{"access_token":"`+access+`"}`)
	if status != http.StatusOK {
		t.Fatalf("invalidate: %d %v", status, inv)
	}
	if _, ok := srv.ItemByAccessToken(access); ok {
		t.Error("the old access token still opens the item")
	}
	if _, ok := srv.ItemByAccessToken(inv["new_access_token"].(string)); !ok {
		t.Error("the new access token does not open the item")
	}
}

func TestFaultsAreUsedInOrderAndCounted(t *testing.T) {
	t.Parallel()
	srv := plaidtest.NewServer(t, plaidtest.WithSpec(plaidtest.LoadSpec(t)))
	srv.FailNext(plaidtest.EndpointWebhookKeyGet, 2, "RATE_LIMIT_EXCEEDED")
	srv.FailNextWith(plaidtest.EndpointWebhookKeyGet, 1, plaidtest.Fault{Status: 500, ErrorType: "API_ERROR", ErrorCode: "INTERNAL_SERVER_ERROR", ErrorMessage: "boom", RetryAfter: 2})
	want := []struct {
		status int
		code   string
	}{{429, "RATE_LIMIT_EXCEEDED"}, {429, "RATE_LIMIT_EXCEEDED"}, {500, "INTERNAL_SERVER_ERROR"}, {200, ""}}
	for i, w := range want {
		status, body := post(t, srv, plaidtest.EndpointWebhookKeyGet, nil, `{"key_id":"`+srv.CurrentKid()+`"}`)
		code, _ := body["error_code"].(string)
		if status != w.status || code != w.code {
			t.Errorf("call %d: %d %s, want %d %s", i, status, code, w.status, w.code)
		}
	}
	if n := srv.Calls(plaidtest.EndpointWebhookKeyGet); n != 4 {
		t.Errorf("calls = %d, want 4", n)
	}
	if n := srv.PendingFaults(plaidtest.EndpointWebhookKeyGet); n != 0 {
		t.Errorf("pending faults = %d", n)
	}
}

func TestFiredWebhooksVerifyWithThePublishedKey(t *testing.T) {
	t.Parallel()
	srv := plaidtest.NewServer(t, plaidtest.WithSpec(plaidtest.LoadSpec(t)))
	wh := srv.FireWebhook("item-1", "ITEM", "NEW_ACCOUNTS_AVAILABLE", map[string]any{"x": 1})
	tok := wh.Header.Get(plaidtest.VerificationHeader)
	status, body := post(t, srv, plaidtest.EndpointWebhookKeyGet, nil, `{"key_id":"`+srv.CurrentKid()+`"}`)
	if status != http.StatusOK {
		t.Fatalf("key: %d %v", status, body)
	}
	k := body["key"].(map[string]any)
	x, _ := base64.RawURLEncoding.DecodeString(k["x"].(string))
	y, _ := base64.RawURLEncoding.DecodeString(k["y"].(string))
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		t.Fatal(err)
	}
	var claims jwt.MapClaims
	if _, err := jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return pub, nil }, jwt.WithValidMethods([]string{"ES256"})); err != nil {
		t.Fatalf("the webhook does not verify: %v", err)
	}
	sum := sha256.Sum256(wh.Body)
	if claims["request_body_sha256"] != hex.EncodeToString(sum[:]) {
		t.Error("the claim is not the body's hash")
	}
	var parsed map[string]any
	if err := json.Unmarshal(wh.Body, &parsed); err != nil || parsed["webhook_code"] != "NEW_ACCOUNTS_AVAILABLE" || parsed["item_id"] != "item-1" {
		t.Errorf("body %s", wh.Body)
	}
	req, err := wh.Request(context.Background(), "http://127.0.0.1/webhooks/plaid")
	if err != nil || req.Header.Get(plaidtest.VerificationHeader) != tok {
		t.Fatalf("request: %v", err)
	}
	got, _ := io.ReadAll(req.Body)
	if !bytes.Equal(got, wh.Body) {
		t.Error("the request body is not the webhook's")
	}
}

type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestWebhooksAreInPlaidsShapes: the webhooks plaidtest fires are bodies
// Plaid's OpenAPI describes, and ValidateWebhook catches one that is not
// (a missing required field, a field no schema declares, a code Plaid does
// not have).
func TestWebhooksAreInPlaidsShapes(t *testing.T) {
	spec := plaidtest.LoadSpec(t)
	s := plaidtest.NewServer(t)
	for name, w := range map[string]plaidtest.Webhook{
		"ITEM_LOGIN_REQUIRED":    s.LoginRequiredWebhook("item-1"),
		"LOGIN_REPAIRED":         s.FireWebhook("item-1", "ITEM", "LOGIN_REPAIRED", nil),
		"NEW_ACCOUNTS_AVAILABLE": s.FireWebhook("item-1", "ITEM", "NEW_ACCOUNTS_AVAILABLE", nil),
		"AUTOMATICALLY_VERIFIED": s.FireWebhook("item-1", "AUTH", "AUTOMATICALLY_VERIFIED", map[string]any{"account_id": "acc-1", "error": nil}),
	} {
		if bad := spec.ValidateWebhook(w.Body); len(bad) > 0 {
			t.Errorf("%s: %v", name, bad)
		}
	}
	for name, body := range map[string]string{
		"ERROR without its error":     `{"webhook_type":"ITEM","webhook_code":"ERROR","item_id":"i","environment":"sandbox"}`,
		"an undeclared field":         `{"webhook_type":"ITEM","webhook_code":"LOGIN_REPAIRED","item_id":"i","environment":"sandbox","event_id":"e"}`,
		"a code Plaid does not have":  `{"webhook_type":"ITEM","webhook_code":"LOGIN_REQUIRED","item_id":"i","environment":"sandbox"}`,
		"an environment of its own":   `{"webhook_type":"ITEM","webhook_code":"LOGIN_REPAIRED","item_id":"i","environment":"dev"}`,
		"AUTH without its account_id": `{"webhook_type":"AUTH","webhook_code":"VERIFICATION_EXPIRED","item_id":"i","environment":"sandbox"}`,
	} {
		if bad := spec.ValidateWebhook([]byte(body)); len(bad) == 0 {
			t.Errorf("%s passed", name)
		}
	}
}
