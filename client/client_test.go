package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/api/ratelimit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/sandbox"
	"github.com/kluis-dev/kluis/client"
	"github.com/kluis-dev/kluis/client/kluisapi"
	"github.com/kluis-dev/kluis/vault"
)

// These tests run the client against a real kluis: the api package's
// listeners over real Postgres, the sandbox bank provider, and the internal
// listener's mutual TLS with certificates from a test CA, written to files
// as a service would have them.

var sandboxSecret = []byte("kluis-client-test-sandbox-secret-0123456789")

// kluisEnv is a running kluis with the sandbox bank.
type kluisEnv struct {
	*apitest.Env
	// posts records the Idempotency-Key of every POST that reached kluis.
	mu    sync.Mutex
	posts []string
}

func startKluis(t *testing.T, opts ...apitest.Option) *kluisEnv {
	t.Helper()
	env := apitest.Start(t, append([]apitest.Option{func(d *api.Deps) {
		sb, err := sandbox.New(sandbox.Options{DB: d.DB, Secret: sandboxSecret})
		if err != nil {
			t.Fatal(err)
		}
		bank, err := banklink.New(banklink.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Provider: sb,
			Keys: d.Pseudonyms.(*vault.SystemKeys), Logger: d.Logger})
		if err != nil {
			t.Fatal(err)
		}
		d.BankLink = bank
	}}, opts...)...)
	k := &kluisEnv{Env: env}
	record := func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if c.Request().Method == http.MethodPost {
				k.mu.Lock()
				k.posts = append(k.posts, c.Request().Header.Get("Idempotency-Key"))
				k.mu.Unlock()
			}
			return next(c)
		}
	}
	env.PublicEcho.Pre(record)
	env.InternalEcho.Pre(record)
	return k
}

// serviceClient is a client for service, its certificate, key and CA read
// from files.
func (k *kluisEnv) serviceClient(t *testing.T, service string, retry client.RetryPolicy) *client.Client {
	t.Helper()
	dir := t.TempDir()
	pair, err := k.CA.Client(service, "spiffe://kluis.test/"+service)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := pair.Write(dir, service)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := k.CA.WriteCA(dir, "kluis-ca")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{BaseURL: k.Internal.URL, TLS: &client.TLSFiles{CertFile: cert, KeyFile: key, CAFile: ca}, Retry: retry})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// userClient is a client of the public listener for the user sub.
func (k *kluisEnv) userClient(t *testing.T, sub string) *client.Client {
	t.Helper()
	tok := jwttest.Token(t, jwttest.WithSubject(sub))
	c, err := client.New(client.Config{BaseURL: k.Public.URL,
		BearerToken: func(context.Context) (string, error) { return tok, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// link links a sandbox item for sub through the generated client, as an
// app's back end would, and returns it.
func (k *kluisEnv) link(t *testing.T, sub string) kluisapi.Item {
	t.Helper()
	ctx := context.Background()
	u := k.userClient(t, sub).API
	s, err := u.CreateLinkSessionWithResponse(ctx, nil, kluisapi.CreateLinkSessionJSONRequestBody{})
	if err != nil || s.JSON201 == nil {
		t.Fatalf("link session: %v %s", err, body(s.Body))
	}
	inst := "ins_sandbox"
	pt, err := u.CreateSandboxPublicTokenWithResponse(ctx, nil, kluisapi.CreateSandboxPublicTokenJSONRequestBody{
		LinkSessionId: s.JSON201.Id, InstitutionId: &inst, Username: "user_good", Password: "pass_good"})
	if err != nil || pt.JSON201 == nil {
		t.Fatalf("public token: %v %s", err, body(pt.Body))
	}
	ex, err := u.ExchangePublicTokenWithResponse(ctx, s.JSON201.Id, nil, kluisapi.ExchangePublicTokenJSONRequestBody{PublicToken: pt.JSON201.PublicToken})
	if err != nil || ex.JSON201 == nil {
		t.Fatalf("exchange: %v %s", err, body(ex.Body))
	}
	return ex.JSON201.Item
}

func body(b []byte) string { return string(b) }

func TestAServiceRevealsWithMutualTLSFromFiles(t *testing.T) {
	t.Parallel()
	k := startKluis(t)
	item := k.link(t, "user-client-reveal")
	c := k.serviceClient(t, "payments", client.RetryPolicy{})
	ctx := context.Background()

	tok, err := c.RevealItemToken(ctx, item.Id, "payment_initiation")
	if err != nil {
		t.Fatal(err)
	}
	if tok.Kind != "bank_access_token" || tok.Owner != (client.Owner{Type: "item", ID: item.Id}) || tok.Secret.AccessToken == "" || tok.Secret.Provider != "sandbox" {
		t.Fatalf("revealed %+v", tok)
	}
	if s := fmt.Sprintf("%v %+v %#v", tok, tok, tok.Secret); strings.Contains(s, tok.Secret.AccessToken) {
		t.Errorf("printing a revealed credential shows its secret: %s", s)
	}

	internal, err := c.Item(ctx, item.Id)
	if err != nil {
		t.Fatal(err)
	}
	byRef, err := c.RevealCredential(ctx, internal.CredentialRef, "balance_check")
	if err != nil || byRef.Secret.AccessToken != tok.Secret.AccessToken || byRef.Ref != internal.CredentialRef {
		t.Fatalf("reveal by reference = %+v, %v", byRef, err)
	}

	acc := item.Accounts[0]
	num, err := c.RevealAccountNumber(ctx, acc.Id, "payment_initiation")
	if err != nil {
		t.Fatal(err)
	}
	if num.Kind != "account_number" || num.Owner.ID != acc.Id || num.Secret.AccountNumber == "" || !strings.HasSuffix(num.Secret.AccountNumber, acc.Mask) {
		t.Fatalf("revealed number %+v (mask %s)", num, acc.Mask)
	}
	if a, err := c.Account(ctx, acc.Id); err != nil || a.AccountNumberRef == nil {
		t.Fatalf("account = %+v, %v", a, err)
	}
}

func TestErrorsCarryTheCodeAndTheReason(t *testing.T) {
	t.Parallel()
	k := startKluis(t)
	item := k.link(t, "user-client-errors")
	ctx := context.Background()
	payments := k.serviceClient(t, "payments", client.RetryPolicy{})
	reporting := k.serviceClient(t, "reporting", client.RetryPolicy{})
	for _, tc := range []struct {
		name         string
		call         func() error
		status       int
		code, reason string
	}{
		{"a purpose the policy does not allow is 403", func() error {
			_, err := payments.RevealItemToken(ctx, item.Id, "marketing")
			return err
		}, 403, "forbidden", ""},
		{"a kind the policy does not allow is 403", func() error {
			_, err := reporting.RevealItemToken(ctx, item.Id, "statement")
			return err
		}, 403, "forbidden", ""},
		{"an unknown item is 404", func() error {
			_, err := payments.RevealItemToken(ctx, "itm_"+strings.Repeat("a", 32), "payment_initiation")
			return err
		}, 404, "not_found", ""},
		{"a malformed purpose is 400", func() error {
			_, err := payments.RevealItemToken(ctx, item.Id, "no spaces allowed")
			return err
		}, 400, "invalid_request", ""},
		{"an unknown account is 404", func() error {
			_, err := payments.Account(ctx, "acc_unknown")
			return err
		}, 404, "not_found", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var e *client.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want *client.Error", err, err)
			}
			if e.Status != tc.status || e.Code != tc.code || e.Reason != tc.reason || e.RequestID == "" {
				t.Errorf("error = %+v, want %d %s %q with a request id", e, tc.status, tc.code, tc.reason)
			}
			if !client.IsCode(err, tc.code) {
				t.Errorf("IsCode(%q) = false for %v", tc.code, err)
			}
		})
	}
}

func TestEveryPostCarriesAnIdempotencyKey(t *testing.T) {
	t.Parallel()
	k := startKluis(t)
	item := k.link(t, "user-client-idem")
	c := k.serviceClient(t, "payments", client.RetryPolicy{})
	if _, err := c.RevealItemToken(context.Background(), item.Id, "payment_initiation"); err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.posts) < 4 {
		t.Fatalf("%d POSTs seen, want the link session, public token, exchange and reveal", len(k.posts))
	}
	seen := map[string]bool{}
	for i, key := range k.posts {
		if key == "" || seen[key] {
			t.Errorf("POST %d: Idempotency-Key %q, want a fresh one on every call", i, key)
		}
		seen[key] = true
	}
}

// flakyLimiter fails its first n calls (503 from kluis, with Retry-After)
// and then allows everything.
type flakyLimiter struct{ fail atomic.Int32 }

func (f *flakyLimiter) Allow(context.Context, string, ratelimit.Limit) (ratelimit.Result, error) {
	if f.fail.Add(-1) >= 0 {
		return ratelimit.Result{}, errors.New("limiter down")
	}
	return ratelimit.Result{Allowed: true, Remaining: 1}, nil
}

// A 503 with Retry-After is retried, with the same Idempotency-Key, and
// the call succeeds once kluis can answer; without retries it is the
// error, with its Retry-After.
func TestA503WithRetryAfterIsRetriedWithTheSameKey(t *testing.T) {
	t.Parallel()
	lim := &flakyLimiter{}
	k := startKluis(t, func(d *api.Deps) { d.RateLimiter = lim })
	item := k.link(t, "user-client-retry")
	ctx := context.Background()

	lim.fail.Store(1)
	_, err := k.serviceClient(t, "payments", client.RetryPolicy{MaxRetries: -1}).RevealItemToken(ctx, item.Id, "payment_initiation")
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 503 || e.Code != "unavailable" || e.RetryAfter <= 0 {
		t.Fatalf("without retries: %v, want 503 unavailable with Retry-After", err)
	}

	k.mu.Lock()
	before := len(k.posts)
	k.mu.Unlock()
	lim.fail.Store(1)
	tok, err := k.serviceClient(t, "payments", client.RetryPolicy{MaxRetries: 1}).RevealItemToken(ctx, item.Id, "payment_initiation")
	if err != nil || tok.Secret.AccessToken == "" {
		t.Fatalf("with one retry: %+v, %v", tok, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if got := k.posts[before:]; len(got) != 2 || got[0] != got[1] || got[0] == "" {
		t.Errorf("the retried reveal's keys = %q, want the same key twice", got)
	}
}

// The generated client has a method for every operation of the contract
// (but the two left out in oapi-codegen.yaml): a route added to
// api/openapi.yaml without regenerating fails here.
func TestTheGeneratedClientIsUpToDate(t *testing.T) {
	t.Parallel()
	doc, err := apitest.LoadContract(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	methods := map[string]bool{}
	typ := reflect.TypeOf(&kluisapi.ClientWithResponses{})
	for i := range typ.NumMethod() {
		methods[typ.Method(i).Name] = true
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "getOpenAPI" || op.OperationID == "getDocs" || slices.Contains(op.Tags, "hosted") {
				continue // pages for browsers, not API for services
			}
			name := strings.ToUpper(op.OperationID[:1]) + op.OperationID[1:] + "WithResponse"
			if !methods[name] {
				t.Errorf("%s %s (%s): client/kluisapi has no %s; run `go generate ./client/...` and commit the result", method, path, op.OperationID, name)
			}
		}
	}
}
