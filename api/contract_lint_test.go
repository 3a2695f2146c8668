package api_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/kluis-dev/kluis/api/apitest"
)

// The contract's structural rules, checked in Go so that `make test` (which
// has no npm) catches a route added without them. They are the rules of
// Spectral's OWASP ruleset that matter most to kluis (`make lint` runs the
// whole ruleset, tools/spectral/.spectral.yaml) plus kluis's own: every
// answer counted against a limit declares the rate-limit headers, and every
// list is paginated. Each finding names the operation (or schema) and the
// rule, so that whoever added the route knows what to add.

// lintFinding is one broken rule at one place.
type lintFinding struct{ where, rule, what string }

func (f lintFinding) String() string { return f.where + ": rule " + f.rule + ": " + f.what }

// contractLinter collects findings over a whole document.
type contractLinter struct {
	findings []lintFinding
	seen     map[*openapi3.Schema]bool
}

func (l *contractLinter) add(where, rule, format string, args ...any) {
	l.findings = append(l.findings, lintFinding{where, rule, fmt.Sprintf(format, args...)})
}

// lintContract applies every rule to doc and returns the findings, sorted.
func lintContract(doc *openapi3.T) []string {
	l := &contractLinter{seen: map[*openapi3.Schema]bool{}}
	ids := map[string]string{}
	for _, path := range doc.Paths.InMatchingOrder() {
		item := doc.Paths.Value(path)
		for method, op := range item.Operations() {
			where := method + " " + path
			l.operation(where, op, ids)
			for _, p := range append(append(openapi3.Parameters{}, item.Parameters...), op.Parameters...) {
				if p.Value != nil {
					l.schema(where+" parameter "+p.Value.Name, p.Value.Schema)
				}
			}
			if op.RequestBody != nil && op.RequestBody.Value != nil {
				for ct, mt := range op.RequestBody.Value.Content {
					l.schema(where+" request body "+ct, mt.Schema)
				}
			}
			for _, code := range sortedResponseCodes(op) {
				r := op.Responses.Value(code).Value
				for ct, mt := range r.Content {
					l.schema(where+" response "+code+" "+ct, mt.Schema)
				}
				for name, h := range r.Headers {
					if h.Value != nil {
						l.schema(where+" response "+code+" header "+name, h.Value.Schema)
					}
				}
			}
		}
	}
	for name, s := range doc.Components.Schemas {
		l.schema("components.schemas."+name, s)
	}
	out := make([]string, len(l.findings))
	for i, f := range l.findings {
		out[i] = f.String()
	}
	sort.Strings(out)
	return out
}

func sortedResponseCodes(op *openapi3.Operation) []string {
	var codes []string
	for code, r := range op.Responses.Map() {
		if r.Value != nil {
			codes = append(codes, code)
		}
	}
	sort.Strings(codes)
	return codes
}

// operation checks the rules of one operation.
func (l *contractLinter) operation(where string, op *openapi3.Operation, ids map[string]string) {
	switch prev, dup := ids[op.OperationID]; {
	case op.OperationID == "":
		l.add(where, "operation-operationId", "every operation needs an operationId (the Go client names its method after it)")
	case dup:
		l.add(where, "operation-operationId-unique", "operationId %q is also %s's", op.OperationID, prev)
	default:
		ids[op.OperationID] = where
	}
	if strings.TrimSpace(op.Description) == "" {
		l.add(where, "operation-description", "every operation needs a description (who may call it, what it changes, its errors)")
	}
	l.authentication(where, op)
	l.limits(where, op)
	l.pagination(where, op)
}

// authentication: every operation says how it is authenticated, and one
// that is answers 401 (no or bad credentials) and, where a policy or a role
// decides (a security scheme, the service policy), 403.
func (l *contractLinter) authentication(where string, op *openapi3.Operation) {
	schemes := op.Security != nil && len(*op.Security) > 0
	mtls := op.Extensions["x-mutual-tls"] == "required"
	other, _ := op.Extensions["x-authentication"].(string)
	switch {
	case !schemes && !mtls && other == "":
		l.add(where, "authentication-declared", "name a security scheme, `x-mutual-tls: required`, or `x-authentication` (what authenticates it, or why nothing does: \"none: …\")")
		return
	case !schemes && !mtls && strings.HasPrefix(other, "none"):
		return
	}
	if op.Responses.Value("401") == nil {
		l.add(where, "authenticated-401", "an authenticated route declares 401 (missing or bad credentials)")
	}
	if (schemes || mtls) && op.Responses.Value("403") == nil {
		l.add(where, "authenticated-403", "an authenticated route declares 403 (the policy or the token's roles say no)")
	}
}

// limits: every route is rate-limited, so it declares 429 and 503 (the
// limiter or another dependency down), both with Retry-After, and its 2XX
// and 4XX answers declare RateLimit and RateLimit-Policy.
func (l *contractLinter) limits(where string, op *openapi3.Operation) {
	for _, code := range []string{"429", "503"} {
		r := op.Responses.Value(code)
		if r == nil || r.Value == nil {
			l.add(where, "declares-"+code, "every route is rate-limited and fails closed: declare %s", code)
			continue
		}
		if r.Value.Headers["Retry-After"] == nil {
			l.add(where+" response "+code, "retry-after", "a %s declares the Retry-After header", code)
		}
	}
	for _, code := range sortedResponseCodes(op) {
		if code[0] != '2' && code[0] != '4' {
			continue
		}
		h := op.Responses.Value(code).Value.Headers
		for _, name := range []string{"RateLimit", "RateLimit-Policy"} {
			if h[name] == nil {
				l.add(where+" response "+code, "rate-limit-headers", "a 2XX or 4XX answer declares the %s header (#/components/headers/%s)", name, strings.ReplaceAll(name, "-", ""))
			}
		}
	}
}

// pagination: a GET that answers a list (an object with an array of
// objects) takes limit and cursor and answers next_cursor, unless it says
// why not in `x-not-paginated`.
func (l *contractLinter) pagination(where string, op *openapi3.Operation) {
	if !strings.HasPrefix(where, http.MethodGet+" ") || op.Extensions["x-not-paginated"] != nil {
		return
	}
	ok := op.Responses.Value("200")
	if ok == nil || ok.Value == nil || ok.Value.Content.Get("application/json") == nil {
		return
	}
	s := ok.Value.Content.Get("application/json").Schema
	if s == nil || s.Value == nil || !isList(s.Value) {
		return
	}
	for _, name := range []string{"limit", "cursor"} {
		if op.Parameters.GetByInAndName("query", name) == nil {
			l.add(where, "list-paginated", "a list takes the %q query parameter (#/components/parameters/%s), or says why not in x-not-paginated", name, strings.ToUpper(name[:1])+name[1:])
		}
	}
	if s.Value.Properties["next_cursor"] == nil {
		l.add(where, "list-paginated", "a list answers next_cursor")
	}
}

// isList reports whether s is a list: an object holding an array of
// objects that is not itself one object (which has an id).
func isList(s *openapi3.Schema) bool {
	if s.Properties["id"] != nil {
		return false
	}
	for _, p := range s.Properties {
		if p.Value == nil || !p.Value.Type.Is(openapi3.TypeArray) || p.Value.Items == nil || p.Value.Items.Value == nil {
			continue
		}
		if it := p.Value.Items.Value; it.Type.Is(openapi3.TypeObject) || len(it.AllOf) > 0 {
			return true
		}
	}
	return false
}

// schema checks every schema reachable from s: strings bounded, arrays
// bounded, integers with a format and bounds.
func (l *contractLinter) schema(where string, ref *openapi3.SchemaRef) {
	if ref == nil || ref.Value == nil || l.seen[ref.Value] {
		return
	}
	s := ref.Value
	l.seen[s] = true
	if ref.Ref != "" {
		where = strings.TrimPrefix(ref.Ref, "#/")
		where = strings.ReplaceAll(where, "/", ".")
	}
	switch {
	case s.Type.Is(openapi3.TypeString):
		if s.MaxLength == nil && len(s.Enum) == 0 {
			l.add(where, "string-limit", "a string needs maxLength (or an enum)")
		}
	case s.Type.Is(openapi3.TypeArray):
		if s.MaxItems == nil {
			l.add(where, "array-limit", "an array needs maxItems")
		}
	case s.Type.Is(openapi3.TypeInteger):
		if s.Format == "" || s.Min == nil || s.Max == nil {
			l.add(where, "integer-limit", "an integer needs format (int32 or int64), minimum and maximum")
		}
	}
	for name, p := range s.Properties {
		l.schema(where+"."+name, p)
	}
	l.schema(where+"[]", s.Items)
	if s.AdditionalProperties.Schema != nil {
		l.schema(where+".*", s.AdditionalProperties.Schema)
	}
	for i, group := range []openapi3.SchemaRefs{s.OneOf, s.AnyOf, s.AllOf} {
		for j, sub := range group {
			l.schema(fmt.Sprintf("%s.%s[%d]", where, [...]string{"oneOf", "anyOf", "allOf"}[i], j), sub)
		}
	}
}

func TestTheContractKeepsItsStructuralRules(t *testing.T) {
	t.Parallel()
	doc, err := apitest.LoadContract(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range lintContract(doc) {
		t.Error(f)
	}
}

// TestTheContractLintCatchesAnUndeclaredRoute shows the lint at work on a
// route added the way a hurried change would add it.
func TestTheContractLintCatchesAnUndeclaredRoute(t *testing.T) {
	t.Parallel()
	doc, err := openapi3.NewLoader().LoadFromData([]byte(`
openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /v1/things:
    get:
      security: [{userToken: []}]
      responses:
        "200":
          description: things
          content:
            application/json:
              schema:
                type: object
                properties:
                  things: {type: array, items: {type: object, properties: {name: {type: string}, n: {type: integer}}}}
components:
  securitySchemes:
    userToken: {type: http, scheme: bearer}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(lintContract(doc), "\n")
	for _, want := range []string{
		"GET /v1/things: rule operation-operationId",
		"GET /v1/things: rule operation-description",
		"GET /v1/things: rule authenticated-401",
		"GET /v1/things: rule authenticated-403",
		"GET /v1/things: rule declares-429",
		"GET /v1/things: rule declares-503",
		"GET /v1/things response 200: rule rate-limit-headers",
		"GET /v1/things: rule list-paginated",
		"GET /v1/things response 200 application/json.things: rule array-limit",
		"GET /v1/things response 200 application/json.things[].name: rule string-limit",
		"GET /v1/things response 200 application/json.things[].n: rule integer-limit",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the lint does not report %q; it reports:\n%s", want, got)
		}
	}
}
