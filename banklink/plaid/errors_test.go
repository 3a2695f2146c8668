package plaid_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
)

func startHTTP(t *testing.T, h http.Handler) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func TestPlaidErrorsMapToKluisCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		code string
		want string
	}{
		{"a login to repair", "ITEM_LOGIN_REQUIRED", banklink.CodeItemLoginRequired},
		{"the rate limit", "RATE_LIMIT_EXCEEDED", banklink.CodeRateLimited},
		{"another rate limit of its type", "ACCOUNTS_LIMIT", banklink.CodeRateLimited},
		{"an institution down", "INSTITUTION_DOWN", banklink.CodeInstitutionDown},
		{"an institution not responding", "INSTITUTION_NOT_RESPONDING", banklink.CodeInstitutionDown},
		{"an institution not available", "INSTITUTION_NOT_AVAILABLE", banklink.CodeInstitutionDown},
		{"an institution no longer supported", "INSTITUTION_NO_LONGER_SUPPORTED", banklink.CodeProductNotSupported},
		{"an invalid access token", "INVALID_ACCESS_TOKEN", banklink.CodeInvalidToken},
		{"an invalid public token", "INVALID_PUBLIC_TOKEN", banklink.CodeInvalidToken},
		{"an invalid link token", "INVALID_LINK_TOKEN", banklink.CodeInvalidToken},
		{"a removed item", "ITEM_NOT_FOUND", banklink.CodeInvalidToken},
		{"refused credentials", "INVALID_CREDENTIALS", banklink.CodeInvalidCredentials},
		{"products not supported", "PRODUCTS_NOT_SUPPORTED", banklink.CodeProductNotSupported},
		{"a product not ready", "PRODUCT_NOT_READY", banklink.CodeProductNotReady},
		{"no auth accounts", "NO_AUTH_ACCOUNTS", banklink.CodeProductNotSupported},
		{"an API error", "INTERNAL_SERVER_ERROR", kluis.EUnavailable},
		{"planned maintenance", "PLANNED_MAINTENANCE", kluis.EUnavailable},
		{"our own bad request", "MISSING_FIELDS", banklink.CodeProviderError},
		{"our own bad input", "INVALID_FIELD", banklink.CodeProviderError},
		{"our own bad keys", "INVALID_API_KEYS", banklink.CodeProviderError},
		{"no accounts shared", "NO_ACCOUNTS", banklink.CodeNoAccounts},
		{"access not granted", "ACCESS_NOT_GRANTED", banklink.CodeAccessNotGranted},
		{"a locked item", "ITEM_LOCKED", banklink.CodeItemLoginRequired},
	}
	srv := newServer(t)
	p := newProvider(t, srv, func(o *plaid.Options) { o.MaxRetries = -1 })
	ex := link(t, srv, p, plaidtest.InstitutionAuth)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not parallel: the injected fault is for the next call.
			srv.FailNext(plaidtest.EndpointAccountsGet, 1, tt.code)
			_, err := p.GetAccounts(context.Background(), ex.AccessToken)
			wantCode(t, err, tt.want)
			msg := err.Error()
			if !strings.Contains(msg, tt.code) {
				t.Errorf("message %q does not name the code %s", msg, tt.code)
			}
			if !strings.Contains(msg, "request_id") {
				t.Errorf("message %q has no request_id", msg)
			}
			if strings.Contains(msg, "plaidtest:") || strings.Contains(msg, ex.AccessToken) {
				t.Errorf("message %q carries Plaid's error_message", msg)
			}
			if tt.want == kluis.EUnavailable && !errors.Is(err, kluis.ErrUnavailable) {
				t.Errorf("unavailable error does not wrap kluis.ErrUnavailable")
			}
		})
	}
}

func TestAnswersThatAreNotPlaidsShape(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fault plaidtest.Fault
		want  string
	}{
		{"a proxy's HTML 502", plaidtest.Fault{Status: http.StatusBadGateway, RawBody: []byte("<html>bad gateway</html>")}, kluis.EUnavailable},
		{"a bare 429", plaidtest.Fault{Status: http.StatusTooManyRequests, RawBody: []byte("slow down")}, banklink.CodeRateLimited},
		{"garbage with 400", plaidtest.Fault{Status: http.StatusBadRequest, RawBody: []byte("{not json")}, banklink.CodeProviderError},
		{"garbage with 200", plaidtest.Fault{Status: http.StatusOK, RawBody: []byte("{not json")}, banklink.CodeProviderError},
		{"an empty 200", plaidtest.Fault{Status: http.StatusOK, RawBody: []byte("{}")}, banklink.CodeProviderError},
		{"a body over the cap", plaidtest.Fault{Status: http.StatusOK, RawBody: []byte(`{"x":"` + strings.Repeat("a", plaid.MaxResponseBytes) + `"}`)}, kluis.EUnavailable},
		{"a dropped connection", plaidtest.Fault{Drop: true}, kluis.EUnavailable},
		{"an odd error code", plaidtest.Fault{Status: http.StatusBadRequest, ErrorType: "ITEM_ERROR", ErrorCode: "<script>"}, banklink.CodeProviderError},
	}
	srv := newServer(t)
	p := newProvider(t, srv, func(o *plaid.Options) { o.MaxRetries = -1 })
	ex := link(t, srv, p, plaidtest.InstitutionAuth)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.FailNextWith(plaidtest.EndpointAccountsGet, 1, tt.fault)
			_, err := p.GetAccounts(context.Background(), ex.AccessToken)
			wantCode(t, err, tt.want)
			if strings.ContainsAny(err.Error(), "<>{") {
				t.Errorf("message %q carries the answer's text", err.Error())
			}
		})
	}
}

func TestRateLimitCarriesRetryAfter(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	p := newProvider(t, srv)
	ex := link(t, srv, p, plaidtest.InstitutionAuth)
	// Retry-After longer than the backoff cap: not retried, passed on.
	srv.FailNextWith(plaidtest.EndpointAccountsGet, 1, plaidtest.Fault{Status: http.StatusTooManyRequests, ErrorType: "RATE_LIMIT_EXCEEDED", ErrorCode: "RATE_LIMIT_EXCEEDED", RetryAfter: 30})
	_, err := p.GetAccounts(context.Background(), ex.AccessToken)
	wantCode(t, err, banklink.CodeRateLimited)
	var ke *kluis.Error
	if !errors.As(err, &ke) || ke.Fields["retry_after_seconds"] != 30 {
		t.Errorf("fields = %v, want retry_after_seconds 30", ke.Fields)
	}
	if n := srv.Calls(plaidtest.EndpointAccountsGet); n != 1 {
		t.Errorf("calls = %d, want 1", n)
	}
}

func TestRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		endpoint  string
		fault     plaidtest.Fault
		faults    int
		wantCalls int
		wantCode  string // "" for success
	}{
		{"429 on an exchange is retried until it succeeds", plaidtest.EndpointPublicTokenExchange, faultOf("RATE_LIMIT_EXCEEDED"), 2, 3, ""},
		{"500 on accounts is retried", plaidtest.EndpointAccountsGet, faultOf("INTERNAL_SERVER_ERROR"), 1, 2, ""},
		{"500 on auth is retried", plaidtest.EndpointAuthGet, faultOf("INTERNAL_SERVER_ERROR"), 2, 3, ""},
		{"500 on a link token is retried", plaidtest.EndpointLinkTokenCreate, faultOf("PLANNED_MAINTENANCE"), 1, 2, ""},
		{"500 on an exchange is not retried", plaidtest.EndpointPublicTokenExchange, faultOf("INTERNAL_SERVER_ERROR"), 1, 1, kluis.EUnavailable},
		{"500 on a rotation is not retried", plaidtest.EndpointAccessTokenInvalidate, faultOf("INTERNAL_SERVER_ERROR"), 1, 1, kluis.EUnavailable},
		{"500 on a removal is not retried", plaidtest.EndpointItemRemove, faultOf("INTERNAL_SERVER_ERROR"), 1, 1, kluis.EUnavailable},
		{"a dropped exchange is not retried", plaidtest.EndpointPublicTokenExchange, plaidtest.Fault{Drop: true}, 1, 1, kluis.EUnavailable},
		{"a dropped accounts call is retried", plaidtest.EndpointAccountsGet, plaidtest.Fault{Drop: true}, 1, 2, ""},
		{"attempts are bounded", plaidtest.EndpointAccountsGet, faultOf("INTERNAL_SERVER_ERROR"), 10, 3, kluis.EUnavailable},
		{"429s are bounded too", plaidtest.EndpointItemRemove, faultOf("RATE_LIMIT_EXCEEDED"), 10, 3, banklink.CodeRateLimited},
		{"a 400 is not retried", plaidtest.EndpointAccountsGet, faultOf("ITEM_LOGIN_REQUIRED"), 1, 1, banklink.CodeItemLoginRequired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t)
			p := newProvider(t, srv, func(o *plaid.Options) { o.MaxRetries = 2 })
			ctx := context.Background()
			public, err := srv.CreatePublicToken(plaidtest.InstitutionAuth)
			if err != nil {
				t.Fatal(err)
			}
			access := ""
			if tt.endpoint != plaidtest.EndpointPublicTokenExchange {
				ex, err := p.ExchangePublicToken(ctx, public)
				if err != nil {
					t.Fatal(err)
				}
				access = ex.AccessToken
			}
			srv.FailNextWith(tt.endpoint, tt.faults, tt.fault)
			before := srv.Calls(tt.endpoint)
			err = callEndpoint(ctx, p, tt.endpoint, public, access)
			if tt.wantCode == "" && err != nil {
				t.Fatalf("call failed: %v", err)
			}
			if tt.wantCode != "" {
				wantCode(t, err, tt.wantCode)
			}
			if got := srv.Calls(tt.endpoint) - before; got != tt.wantCalls {
				t.Errorf("calls = %d, want %d", got, tt.wantCalls)
			}
		})
	}
}

func faultOf(code string) plaidtest.Fault {
	f := plaidtest.Fault{ErrorCode: code}
	switch code {
	case "RATE_LIMIT_EXCEEDED":
		f.Status, f.ErrorType = http.StatusTooManyRequests, "RATE_LIMIT_EXCEEDED"
	case "INTERNAL_SERVER_ERROR":
		f.Status, f.ErrorType = http.StatusInternalServerError, "API_ERROR"
	case "PLANNED_MAINTENANCE":
		f.Status, f.ErrorType = http.StatusServiceUnavailable, "API_ERROR"
	default:
		f.Status, f.ErrorType = http.StatusBadRequest, "ITEM_ERROR"
	}
	return f
}

// callEndpoint makes the adapter call that reaches endpoint.
func callEndpoint(ctx context.Context, p *plaid.Provider, endpoint, public, access string) error {
	var err error
	switch endpoint {
	case plaidtest.EndpointLinkTokenCreate:
		_, err = p.CreateLinkToken(ctx, banklink.LinkTokenRequest{ClientUserID: "pseudo-user-1"})
	case plaidtest.EndpointPublicTokenExchange:
		_, err = p.ExchangePublicToken(ctx, public)
	case plaidtest.EndpointAccountsGet:
		_, err = p.GetAccounts(ctx, access)
	case plaidtest.EndpointAuthGet:
		_, err = p.GetAuth(ctx, access)
	case plaidtest.EndpointItemRemove:
		err = p.RemoveItem(ctx, access)
	case plaidtest.EndpointAccessTokenInvalidate:
		_, err = p.RotateAccessToken(ctx, access)
	}
	return err
}

func TestConnectionFailuresBeforeSendingAreRetriedEvenForAnExchange(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	var dials atomic.Int32
	transport := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials.Add(1) <= 2 {
				return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused")}
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(transport.CloseIdleConnections)
	p := newProvider(t, srv, func(o *plaid.Options) { o.HTTPClient = &http.Client{Transport: transport} })
	public, err := srv.CreatePublicToken(plaidtest.InstitutionAuth)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.ExchangePublicToken(context.Background(), public); err != nil {
		t.Fatalf("exchange after two refused dials: %v", err)
	}
	if n := srv.Calls(plaidtest.EndpointPublicTokenExchange); n != 1 {
		t.Errorf("calls = %d, want 1", n)
	}
}

func TestAClosedServerIsUnavailable(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	p := newProvider(t, srv)
	srv.Close()
	_, err := p.GetAccounts(context.Background(), "access-sandbox-x")
	wantCode(t, err, kluis.EUnavailable)
}

func TestTheCallersDeadlineIsHonoured(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	p := newProvider(t, srv)
	ex := link(t, srv, p, plaidtest.InstitutionAuth)
	srv.SetLatency(plaidtest.EndpointAccountsGet, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := p.GetAccounts(ctx, ex.AccessToken)
	wantCode(t, err, kluis.EUnavailable)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
	if n := srv.Calls(plaidtest.EndpointAccountsGet); n != 1 {
		t.Errorf("calls = %d after the deadline, want 1", n)
	}
}

func TestAnAttemptTimeoutOnAnExchangeIsNotRetried(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	p := newProvider(t, srv, func(o *plaid.Options) { o.Timeout = 500 * time.Millisecond })
	public, err := srv.CreatePublicToken(plaidtest.InstitutionAuth)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetLatency(plaidtest.EndpointPublicTokenExchange, time.Minute)
	_, err = p.ExchangePublicToken(context.Background(), public)
	wantCode(t, err, kluis.EUnavailable)
	if n := srv.Calls(plaidtest.EndpointPublicTokenExchange); n != 1 {
		t.Errorf("calls = %d, want 1", n)
	}
}

func TestAnAttemptTimeoutOnAReadIsRetried(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	p := newProvider(t, srv, func(o *plaid.Options) { o.Timeout = 500 * time.Millisecond; o.MaxRetries = 1 })
	ex := link(t, srv, p, plaidtest.InstitutionAuth)
	srv.SetLatency(plaidtest.EndpointAuthGet, time.Minute)
	_, err := p.GetAuth(context.Background(), ex.AccessToken)
	wantCode(t, err, kluis.EUnavailable)
	if n := srv.Calls(plaidtest.EndpointAuthGet); n != 2 {
		t.Errorf("calls = %d, want 2", n)
	}
}
