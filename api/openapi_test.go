package api_test

import (
	"context"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/sandbox"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/hosted"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
	"github.com/kluis-dev/kluis/verification/sandboxrail"
)

// startEverything starts kluis with every feature on, over the sandbox
// provider and rail, so that every route the server can have exists.
func startEverything(t *testing.T) *apitest.Env {
	t.Helper()
	return apitest.Start(t, func(d *api.Deps) {
		keys := d.Pseudonyms.(*vault.SystemKeys)
		sb, err := sandbox.New(sandbox.Options{DB: d.DB, Secret: sandboxSecret})
		if err != nil {
			t.Fatal(err)
		}
		bank, err := banklink.New(banklink.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Provider: sb, Keys: keys, Logger: d.Logger})
		if err != nil {
			t.Fatal(err)
		}
		d.BankLink = bank
		d.Verification, err = verification.New(verification.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Accounts: banklink.NewAccountStore(d.DB), Keys: keys,
			Rail: sandboxrail.New(d.DB, keys, 0, nil), Logger: d.Logger})
		if err != nil {
			t.Fatal(err)
		}
		d.Compliance = compliance.NewService(d.DB, d.Auditor, nil, nil)
		d.Hosted = hosted.NewStore(d.DB, keys, nil)
		d.PublicURL = "http://127.0.0.1"
		d.Origins = api.StaticOrigins{"https://app.example.com"}
	})
}

// echoParam is an echo path parameter (":id").
var echoParam = regexp.MustCompile(`:([A-Za-z_][A-Za-z0-9_]*)`)

// specPath turns an echo route ("/v1/items/:id") into the contract's form
// ("/v1/items/{id}").
func specPath(echoPath string) string { return echoParam.ReplaceAllString(echoPath, "{$1}") }

// served lists a listener's routes as "METHOD /path/{param}", without
// echo's own not-found catch-alls.
func served(e *echo.Echo) map[string]bool {
	out := map[string]bool{}
	for _, r := range e.Routes() {
		if r.Method == echo.RouteNotFound {
			continue
		}
		out[r.Method+" "+specPath(r.Path)] = true
	}
	return out
}

// inContract lists the contract's operations on a listener, the same way.
func inContract(doc *openapi3.T, listener string) map[string]bool {
	out := map[string]bool{}
	for path, item := range apitest.ForListener(doc, listener).Paths.Map() {
		for method := range item.Operations() {
			out[method+" "+path] = true
		}
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestTheContractIsAValidOpenAPIDocument(t *testing.T) {
	t.Parallel()
	doc, err := apitest.LoadContract(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi = %q, want 3.0.3", doc.OpenAPI)
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			for _, l := range apitest.Listeners(op) {
				if l != apitest.ListenerPublic && l != apitest.ListenerInternal {
					t.Errorf("%s %s: unknown listener %q in x-listeners", method, path, l)
				}
			}
		}
	}
}

func TestEveryRouteTheServerHasIsInTheContractOnItsListener(t *testing.T) {
	t.Parallel()
	doc, err := apitest.LoadContract(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	env := startEverything(t)
	for _, tc := range []struct {
		listener string
		e        *echo.Echo
	}{{apitest.ListenerPublic, env.PublicEcho}, {apitest.ListenerInternal, env.InternalEcho}} {
		want := inContract(doc, tc.listener)
		for _, route := range sortedKeys(served(tc.e)) {
			if !want[route] {
				t.Errorf("the %s listener serves %s, which api/openapi.yaml does not describe there", tc.listener, route)
			}
		}
	}
}

// sampleParam is a value for a path parameter that its schema accepts
// where that is easy (an enum's first value, an id of the right prefix), so
// that the request reaches the handler.
func sampleParam(p *openapi3.Parameter) string {
	if p.Schema == nil || p.Schema.Value == nil {
		return "x"
	}
	s := p.Schema.Value
	if len(s.Enum) > 0 {
		if v, ok := s.Enum[0].(string); ok {
			return v
		}
	}
	if m := regexp.MustCompile(`^\^([a-z]+_)\[a-z2-7\]\{32\}\$$`).FindStringSubmatch(s.Pattern); m != nil {
		return m[1] + strings.Repeat("a", 32)
	}
	return "unknown"
}

// routeHeader is set by the test's own middleware to the route echo matched.
const routeHeader = "X-Test-Route"

func recordRoute(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set(routeHeader, specPath(c.Path()))
		return next(c)
	}
}

func TestEveryOperationInTheContractAnswersOnItsListener(t *testing.T) {
	t.Parallel()
	doc, err := apitest.LoadContract(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	env := startEverything(t)
	env.PublicEcho.Use(recordRoute)
	env.InternalEcho.Use(recordRoute)
	user := userToken(t, "user-openapi")
	listeners := map[string]struct {
		url    string
		client *http.Client
	}{
		apitest.ListenerPublic:   {env.Public.URL, nil},
		apitest.ListenerInternal: {env.Internal.URL, env.ServiceClient(t, "compliance-console")},
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			url := path
			for _, p := range append(append(openapi3.Parameters{}, item.Parameters...), op.Parameters...) {
				if p.Value.In == openapi3.ParameterInPath {
					url = strings.ReplaceAll(url, "{"+p.Value.Name+"}", sampleParam(p.Value))
				}
			}
			token := ""
			if strings.HasPrefix(path, "/v1/") {
				token = user
			}
			ct, body := "", ""
			if op.RequestBody != nil {
				ct, body = "application/json", "{}"
			}
			for _, l := range apitest.Listeners(op) {
				ln := listeners[l]
				t.Run(l+" "+method+" "+path, func(t *testing.T) {
					status, h, out := apitest.Do(t, ln.client, method, ln.url+url, token, ct, body)
					if got := h.Get(routeHeader); got != path || status == http.StatusMethodNotAllowed {
						t.Errorf("%s %s on the %s listener: %d from route %q, want route %q:\n%s", method, url, l, status, got, path, out)
					}
				})
			}
		}
	}
}

func TestTheContractIsServedOnBothListeners(t *testing.T) {
	t.Parallel()
	env := apitest.Start(t)
	for _, tc := range []struct {
		name, url string
		client    *http.Client
	}{
		{"public", env.Public.URL, nil},
		{"internal", env.Internal.URL, env.ServiceClient(t, "payments")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := apitest.Do(t, tc.client, http.MethodGet, tc.url+"/openapi.yaml", "", "", "")
			if status != http.StatusOK || body != string(api.OpenAPI) {
				t.Fatalf("GET /openapi.yaml: %d, %d bytes; want 200 and api/openapi.yaml", status, len(body))
			}
			if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/yaml") {
				t.Errorf("Content-Type = %q, want application/yaml", ct)
			}
			doc, err := openapi3.NewLoader().LoadFromData([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			if err := doc.Validate(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestEveryErrorCodeTheServerCanAnswerIsInTheContract(t *testing.T) {
	t.Parallel()
	doc, err := apitest.LoadContract(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	codeSchema := doc.Components.Schemas["Error"].Value.Properties["error"].Value.Properties["code"].Value
	inSpec := map[string]bool{}
	for _, v := range codeSchema.Enum {
		inSpec[v.(string)] = true
	}
	served := map[string]bool{}
	for code := range api.ErrorStatuses() {
		served[code] = true
	}
	for _, code := range sortedKeys(served) {
		if !inSpec[code] {
			t.Errorf("the server answers error code %q, which the Error schema does not list", code)
		}
	}
	for _, code := range sortedKeys(inSpec) {
		if !served[code] {
			t.Errorf("the Error schema lists %q, which no part of the server registers", code)
		}
	}
}

func TestEverySpecificReasonIsInTheContract(t *testing.T) {
	t.Parallel()
	doc, err := apitest.LoadContract(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	reason := doc.Components.Schemas["Error"].Value.Properties["error"].Value.Properties["reason"].Value
	inSpec := map[string]bool{}
	for _, v := range reason.Enum {
		inSpec[v.(string)] = true
	}
	for code := range api.ErrorReasons() {
		if !inSpec[code] {
			t.Errorf("the server answers reason %q, which the Error schema does not list", code)
		}
		delete(inSpec, code)
	}
	for code := range inSpec {
		t.Errorf("the Error schema lists reason %q, which no part of the server gives", code)
	}
}
