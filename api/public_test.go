package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/compliance"
)

// errorShape is the contract's error body (api/openapi.yaml).
type errorShape struct {
	Error struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		RequestID string `json:"request_id"`
	} `json:"error"`
}

// mustError checks status, the error shape, its code, and that the body says
// nothing of kluis's insides.
func mustError(t *testing.T, status int, body string, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status = %d, want %d; body %s", status, wantStatus, body)
	}
	var e errorShape
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("body is not the error shape: %v: %s", err, body)
	}
	if e.Error.Code != wantCode || e.Error.Message == "" || !strings.HasPrefix(e.Error.RequestID, "req_") {
		t.Fatalf("error = %+v, want code %q with a message and a request id", e.Error, wantCode)
	}
	// The request id is random and may spell anything; look for leaks in the
	// rest of the body.
	rest := strings.Replace(body, e.Error.RequestID, "", 1)
	for _, leak := range []string{"goroutine", "panic", ".go:", "SELECT", "INSERT", "pgx", "SQLSTATE", "runtime/"} {
		if strings.Contains(rest, leak) {
			t.Fatalf("error body leaks %q: %s", leak, body)
		}
	}
}

func countRows(t *testing.T, env *apitest.Env, table string) int {
	t.Helper()
	var n int
	if err := env.DB.Pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestHealthzAndReadyz(t *testing.T) {
	env := apitest.Start(t)
	status, h, body := apitest.Do(t, nil, "GET", env.Public.URL+"/healthz", "", "", "")
	if status != 200 {
		t.Fatalf("healthz = %d %s", status, body)
	}
	if h.Get("Server") != "" || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Cache-Control") != "no-store" {
		t.Fatalf("headers = %v, want no Server, nosniff and no-store", h)
	}
	status, _, body = apitest.Do(t, nil, "GET", env.Public.URL+"/readyz", "", "", "")
	if status != 200 || !strings.Contains(body, `"database":"ok"`) {
		t.Fatalf("readyz = %d %s, want 200 with the database ok", status, body)
	}
}

func TestReadyzIsUnavailableWhenADependencyIsDown(t *testing.T) {
	env := apitest.Start(t, func(d *api.Deps) {
		d.Ready["key_provider"] = func(context.Context) error { return errors.New("kms: connection refused to 10.1.2.3") }
	})
	status, h, body := apitest.Do(t, nil, "GET", env.Public.URL+"/readyz", "", "", "")
	mustError(t, status, body, 503, "unavailable")
	if h.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	if strings.Contains(body, "10.1.2.3") {
		t.Fatalf("readyz leaks the cause: %s", body)
	}
}

func TestEveryBadTokenGets401AndChangesNothing(t *testing.T) {
	env := apitest.Start(t)
	cases := jwttest.Malicious(t)
	cases = append(cases,
		jwttest.Case{Name: "a staff token on a user route", Token: jwttest.StaffToken(t)},
		jwttest.Case{Name: "no token at all", Token: ""},
	)
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			before := countRows(t, env, "subjects")
			status, h, body := apitest.Do(t, nil, "GET", env.Public.URL+"/v1/items", tc.Token, "", "")
			mustError(t, status, body, 401, "unauthenticated")
			if h.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
			if after := countRows(t, env, "subjects"); after != before {
				t.Fatalf("a refused token changed subjects: %d → %d", before, after)
			}
		})
	}
	// Each refusal is counted in the aggregated audit, without the token.
	audited := 0
	for _, e := range refusals(t, env) {
		audited += e.Kinds[compliance.RefusalAuthn]
	}
	if audited != len(cases) {
		t.Fatalf("audited %d failed authentications, want %d", audited, len(cases))
	}
	var leaked int
	if err := env.DB.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM audit_entries e WHERE e::text LIKE '%eyJ%'`).Scan(&leaked); err != nil {
		t.Fatal(err)
	}
	if leaked != 0 {
		t.Fatalf("%d audit entries hold a token", leaked)
	}
}

func TestAGoodTokenPassesAndAQueryStringTokenDoesNot(t *testing.T) {
	env := apitest.Start(t)
	good := jwttest.Token(t)
	status, _, body := apitest.Do(t, nil, "GET", env.Public.URL+"/v1/no-such-route", good, "", "")
	mustError(t, status, body, 404, "not_found")

	status, _, body = apitest.Do(t, nil, "GET", env.Public.URL+"/v1/no-such-route?access_token="+good, "", "", "")
	mustError(t, status, body, 401, "unauthenticated")
	status, _, body = apitest.Do(t, nil, "GET", env.Public.URL+"/v1/no-such-route?access_token="+good, good, "", "")
	mustError(t, status, body, 401, "unauthenticated")
	if strings.Contains(env.Logs.String(), good) {
		t.Fatal("the token reached the log")
	}
}

// echoRoute adds a route that decodes a body through kluis's decoder, so the
// body rules can be tested through the whole middleware chain.
func echoRoute(env *apitest.Env) {
	type payload struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	env.PublicEcho.POST("/test/echo", func(c echo.Context) error {
		var p payload
		if err := api.DecodeJSON(c, &p); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, p)
	})
}

func TestBadInputGetsAClear4xxInTheErrorShape(t *testing.T) {
	env := apitest.Start(t)
	echoRoute(env)
	big := `{"name":"` + strings.Repeat("a", api.MaxBodyBytes) + `"}`
	cases := []struct {
		name, contentType, body string
		status                  int
		code                    string
	}{
		{"oversized body", "application/json", big, 413, "too_large"},
		{"wrong content type", "text/plain", `{"name":"x"}`, 415, "unsupported_media_type"},
		{"form content type", "application/x-www-form-urlencoded", `name=x`, 415, "unsupported_media_type"},
		{"no content type", "", `{"name":"x"}`, 415, "unsupported_media_type"},
		{"malformed JSON", "application/json", `{"name":`, 400, "invalid_request"},
		{"unknown field", "application/json", `{"name":"x","admin":true}`, 400, "invalid_request"},
		{"wrong type", "application/json", `{"n":"seven"}`, 400, "invalid_request"},
		{"two objects", "application/json", `{"name":"x"}{"name":"y"}`, 400, "invalid_request"},
		{"not an object", "application/json", `[1,2,3]`, 400, "invalid_request"},
		{"empty body", "application/json", ` `, 400, "invalid_request"},
		{"SQL in a field is only data", "application/json", `{"name":"' OR 1=1--"}`, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := apitest.Do(t, nil, "POST", env.Public.URL+"/test/echo", "", tc.contentType, tc.body)
			if tc.status == 200 {
				if status != 200 {
					t.Fatalf("status = %d: %s", status, body)
				}
				return
			}
			mustError(t, status, body, tc.status, tc.code)
		})
	}
}

func TestAChunkedBodyOverTheLimitIs413(t *testing.T) {
	env := apitest.Start(t)
	echoRoute(env)
	pr, pw := io.Pipe()
	go func() {
		fmt.Fprint(pw, `{"name":"`)
		chunk := strings.Repeat("a", 64<<10)
		for i := 0; i < 20; i++ {
			if _, err := fmt.Fprint(pw, chunk); err != nil {
				break
			}
		}
		pw.Close()
	}()
	// A pipe has no known length, so the body goes out chunked.
	req, _ := http.NewRequest("POST", env.Public.URL+"/test/echo", pr)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	mustError(t, resp.StatusCode, string(b), 413, "too_large")
}

func TestUnknownRoutesAndMethodsAnswerInTheErrorShape(t *testing.T) {
	env := apitest.Start(t)
	status, _, body := apitest.Do(t, nil, "GET", env.Public.URL+"/nope", "", "", "")
	mustError(t, status, body, 404, "not_found")
	status, _, body = apitest.Do(t, nil, "DELETE", env.Public.URL+"/healthz", "", "", "")
	mustError(t, status, body, 405, "method_not_allowed")
}

func TestAPanicIsA500ThatSaysNothing(t *testing.T) {
	env := apitest.Start(t)
	env.PublicEcho.GET("/test/panic", func(c echo.Context) error { panic("secret detail: SELECT * FROM credentials") })
	status, _, body := apitest.Do(t, nil, "GET", env.Public.URL+"/test/panic", "", "", "")
	mustError(t, status, body, 500, "internal")
	if strings.Contains(body, "secret detail") {
		t.Fatalf("panic text in body: %s", body)
	}
}

// mustErrorReason is mustError for a generic code with a specific reason.
func mustErrorReason(t *testing.T, status int, body string, wantStatus int, wantCode, wantReason string) {
	t.Helper()
	mustError(t, status, body, wantStatus, wantCode)
	var e struct {
		Error struct {
			Reason string `json:"reason"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Reason != wantReason {
		t.Fatalf("error.reason = %q (%v), want %q: %s", e.Error.Reason, err, wantReason, body)
	}
}
