package plaidtest

import (
	"bytes"
	"compress/gzip"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
)

// specGz is Plaid's published OpenAPI description, version
// 2020-09-14_1.697.4 (MIT licence, from plaid/plaid-openapi), gzipped so
// that every package's tests can validate against it without a path to
// shared files.
//
//go:embed openapi/plaid-2020-09-14.yml.gz
var specGz []byte

// Spec is a loaded Plaid OpenAPI description. It is read-only after
// loading and safe to share between tests and servers.
type Spec struct {
	doc *openapi3.T
}

var (
	specOnce sync.Once
	spec     *Spec
	errSpec  error
)

// LoadSpec returns Plaid's OpenAPI description, loaded once per test
// binary (it is 3 MB of YAML and takes about half a second).
func LoadSpec(tb testing.TB) *Spec {
	tb.Helper()
	specOnce.Do(func() {
		var raw []byte
		raw, errSpec = gunzip(specGz)
		if errSpec != nil {
			return
		}
		spec, errSpec = parseSpec(raw)
	})
	if errSpec != nil {
		tb.Fatalf("plaidtest: load the Plaid OpenAPI description: %v", errSpec)
	}
	return spec
}

// LoadSpecFile loads an OpenAPI description from a file, for a test that
// wants another version than the embedded one. It is not cached.
func LoadSpecFile(tb testing.TB, path string) *Spec {
	tb.Helper()
	doc, err := openapi3.NewLoader().LoadFromFile(path)
	if err != nil {
		tb.Fatalf("plaidtest: load %s: %v", path, err)
	}
	return &Spec{doc: doc}
}

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	return io.ReadAll(zr)
}

func parseSpec(raw []byte) (*Spec, error) {
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		return nil, err
	}
	return &Spec{doc: doc}, nil
}

// route finds the POST operation for path.
func (s *Spec) route(path string) (*routers.Route, error) {
	item := s.doc.Paths.Find(path)
	if item == nil || item.Post == nil {
		return nil, fmt.Errorf("no POST %s in the spec", path)
	}
	return &routers.Route{Spec: s.doc, Server: nil, Path: path, PathItem: item, Method: http.MethodPost, Operation: item.Post}, nil
}

// requireHeaders is the AuthenticationFunc for validation: each of the
// spec's security schemes (PLAID-CLIENT-ID, PLAID-SECRET, Plaid-Version,
// all API-key headers) must be present. Their values are checked by the
// server itself.
func requireHeaders(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	sch := in.SecurityScheme
	if sch == nil || sch.Type != "apiKey" || sch.In != "header" {
		return nil
	}
	if in.RequestValidationInput.Request.Header.Get(sch.Name) == "" {
		return fmt.Errorf("header %s missing", sch.Name)
	}
	return nil
}

// ValidateRequest checks one request to path against the spec: headers,
// content type and body schema, and also that the body holds no field the
// spec does not define (the spec allows extra fields; kluis sends none).
// It returns the violations found, empty if none.
func (s *Spec) ValidateRequest(r *http.Request, path string, body []byte) []string {
	route, err := s.route(path)
	if err != nil {
		return []string{err.Error()}
	}
	r = r.Clone(r.Context())
	r.Body = io.NopCloser(bytes.NewReader(body))
	in := &openapi3filter.RequestValidationInput{
		Request: r,
		Route:   route,
		Options: &openapi3filter.Options{AuthenticationFunc: requireHeaders, MultiError: true},
	}
	var out []string
	if err := openapi3filter.ValidateRequest(r.Context(), in); err != nil {
		out = append(out, fmt.Sprintf("request to %s: %v", path, err))
	}
	var v any
	if json.Unmarshal(body, &v) == nil {
		schema := route.Operation.RequestBody.Value.Content.Get("application/json").Schema.Value
		for _, f := range unknownFields(schema, v, "") {
			out = append(out, fmt.Sprintf("request to %s: field %s is not in the spec", path, f))
		}
	}
	return out
}

// ValidateResponse checks one answer to a request to path against the
// spec, and returns the violations found.
func (s *Spec) ValidateResponse(r *http.Request, path string, status int, header http.Header, body []byte) []string {
	route, err := s.route(path)
	if err != nil {
		return []string{err.Error()}
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: r, Route: route},
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(r.Context(), in); err != nil {
		return []string{fmt.Sprintf("answer %d to %s: %v", status, path, err)}
	}
	return nil
}

// unknownFields lists the object keys in v that schema (with its allOf
// parts) does not declare, recursing into declared properties and array
// items. Free-form objects (no properties) and oneOf/anyOf are not
// descended.
func unknownFields(schema *openapi3.Schema, v any, at string) []string {
	if schema == nil {
		return nil
	}
	switch v := v.(type) {
	case map[string]any:
		props := properties(schema)
		if len(props) == 0 {
			return nil
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var out []string
		for _, k := range keys {
			p, ok := props[k]
			if !ok {
				out = append(out, at+"/"+k)
				continue
			}
			out = append(out, unknownFields(p, v[k], at+"/"+k)...)
		}
		return out
	case []any:
		if schema.Items == nil {
			return nil
		}
		var out []string
		for i, e := range v {
			out = append(out, unknownFields(schema.Items.Value, e, fmt.Sprintf("%s/%d", at, i))...)
		}
		return out
	}
	return nil
}

func properties(schema *openapi3.Schema) map[string]*openapi3.Schema {
	props := map[string]*openapi3.Schema{}
	for k, p := range schema.Properties {
		props[k] = p.Value
	}
	for _, part := range schema.AllOf {
		for k, p := range properties(part.Value) {
			props[k] = p
		}
	}
	return props
}

// shorten keeps a violation readable: kin-openapi prints whole schemas.
func shorten(s string) string {
	if i := strings.Index(s, "\nSchema:"); i > 0 {
		s = s[:i]
	}
	if len(s) > 600 {
		s = s[:600] + "…"
	}
	return s
}

// ErrorTypes lists the values of the spec's PlaidErrorType enum.
func (s *Spec) ErrorTypes() []string {
	ref := s.doc.Components.Schemas["PlaidErrorType"]
	if ref == nil || ref.Value == nil {
		return nil
	}
	out := make([]string, 0, len(ref.Value.Enum))
	for _, v := range ref.Value.Enum {
		if str, ok := v.(string); ok {
			out = append(out, str)
		}
	}
	return out
}

// WebhookCodes lists the webhook_code of every webhook schema the spec
// describes for webhookType (ITEM, AUTH, …): the schemas whose
// webhook_type property is described as that type, in backquotes, as
// Plaid's description writes them.
func (s *Spec) WebhookCodes(webhookType string) []string {
	seen := map[string]bool{}
	for _, ref := range s.doc.Components.Schemas {
		if ref == nil || ref.Value == nil {
			continue
		}
		typ, code := ref.Value.Properties["webhook_type"], ref.Value.Properties["webhook_code"]
		if typ == nil || code == nil || typ.Value == nil || code.Value == nil {
			continue
		}
		if strings.Trim(typ.Value.Description, "`") != webhookType {
			continue
		}
		if c := strings.Trim(code.Value.Description, "`"); c != "" && !strings.ContainsAny(c, " `") {
			seen[c] = true
		}
	}
	out := make([]string, 0, len(seen))
	for c := range seen {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// ValidateWebhook checks a webhook body against the spec's schema for its
// webhook_type and webhook_code (one of them, where Plaid describes a code
// twice), and that it holds no field the schema does not declare (the
// schemas allow extra fields; a Plaid-shaped sender adds none). It returns
// the violations found, empty if the body is one of Plaid's shapes.
func (s *Spec) ValidateWebhook(body []byte) []string {
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		return []string{"webhook body is not a JSON object: " + err.Error()}
	}
	typ, _ := v["webhook_type"].(string)
	code, _ := v["webhook_code"].(string)
	var out []string
	found := false
	for _, name := range s.webhookSchemas(typ, code) {
		found = true
		schema := s.doc.Components.Schemas[name].Value
		var bad []string
		if err := schema.VisitJSON(v, openapi3.MultiErrors()); err != nil {
			bad = append(bad, fmt.Sprintf("%s: %s", name, shorten(err.Error())))
		}
		for _, f := range unknownFields(schema, v, "") {
			bad = append(bad, fmt.Sprintf("%s: field %s is not in the schema", name, f))
		}
		if len(bad) == 0 {
			return nil
		}
		out = append(out, bad...)
	}
	if !found {
		return []string{fmt.Sprintf("the spec describes no %s/%s webhook", typ, code)}
	}
	return out
}

// webhookSchemas names the schemas describing the webhook typ/code, sorted.
func (s *Spec) webhookSchemas(typ, code string) []string {
	var out []string
	for name, ref := range s.doc.Components.Schemas {
		if ref == nil || ref.Value == nil {
			continue
		}
		t, c := ref.Value.Properties["webhook_type"], ref.Value.Properties["webhook_code"]
		if t == nil || c == nil || t.Value == nil || c.Value == nil {
			continue
		}
		if strings.Trim(t.Value.Description, "`") == typ && strings.Trim(c.Value.Description, "`") == code {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}
