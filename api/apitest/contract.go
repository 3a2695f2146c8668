package apitest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/kluis-dev/kluis/api"
)

// The listeners an operation of api/openapi.yaml is served on: the
// extension x-listeners names them; otherwise x-mutual-tls: required means
// the internal listener and anything else the public one.
const (
	ListenerPublic   = "public"
	ListenerInternal = "internal"
)

// LoadContract parses and validates api/openapi.yaml (the bytes the
// listeners serve).
func LoadContract(ctx context.Context) (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPI)
	if err != nil {
		return nil, fmt.Errorf("load openapi.yaml: %w", err)
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("validate openapi.yaml: %w", err)
	}
	return doc, nil
}

// Listeners says which listeners serve op.
func Listeners(op *openapi3.Operation) []string {
	if v, ok := op.Extensions["x-listeners"].([]any); ok {
		out := make([]string, 0, len(v))
		for _, l := range v {
			if s, ok := l.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	if op.Extensions["x-mutual-tls"] == "required" {
		return []string{ListenerInternal}
	}
	return []string{ListenerPublic}
}

// ForListener is the part of doc served on listener: its paths keep only
// the operations Listeners assigns to it, and it has no servers, so that a
// router matches on the path alone (test servers listen on random ports).
func ForListener(doc *openapi3.T, listener string) *openapi3.T {
	out := *doc
	out.Servers = nil
	out.Paths = openapi3.NewPaths()
	for path, item := range doc.Paths.Map() {
		kept := &openapi3.PathItem{Extensions: item.Extensions, Summary: item.Summary,
			Description: item.Description, Parameters: item.Parameters}
		n := 0
		for method, op := range item.Operations() {
			for _, l := range Listeners(op) {
				if l == listener {
					kept.SetOperation(method, op)
					n++
				}
			}
		}
		if n > 0 {
			out.Paths.Set(path, kept)
		}
	}
	return &out
}

var contract struct {
	once    sync.Once
	routers map[string]routers.Router
	err     error
}

// contractRouter finds a request's operation among listener's.
func contractRouter(listener string) (routers.Router, error) {
	contract.once.Do(func() {
		doc, err := LoadContract(context.Background())
		if err != nil {
			contract.err = err
			return
		}
		contract.routers = map[string]routers.Router{}
		for _, l := range []string{ListenerPublic, ListenerInternal} {
			r, err := legacy.NewRouter(ForListener(doc, l))
			if err != nil {
				contract.err = fmt.Errorf("openapi router for %s: %w", l, err)
				return
			}
			contract.routers[l] = r
		}
	})
	return contract.routers[listener], contract.err
}

// uncheckedDeps are the Deps whose env opted out of contract checks.
var uncheckedDeps sync.Map

// WithoutContractCheck turns off the validation of requests and responses
// against api/openapi.yaml, for a test that must send or receive what the
// contract does not describe. Use it sparingly, and say why.
func WithoutContractCheck() Option {
	return func(d *api.Deps) { uncheckedDeps.Store(d, struct{}{}) }
}

// checkContract wraps a listener's handler: every request whose route is in
// the contract is validated against it, and so is its response, and any
// violation fails the test. A request that does not validate (the bad-input
// tests send them on purpose) has only its response checked. Benchmarks are
// not checked: they measure kluis, not the validator.
func checkContract(t testing.TB, listener string, h http.Handler) http.Handler {
	t.Helper()
	if _, ok := t.(*testing.B); ok {
		return h
	}
	router, err := contractRouter(listener)
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	registerHTMLDecoder.Do(func() {
		// GET /docs answers HTML, which kin-openapi has no decoder for; its
		// schema is a bounded string, checked as plain text is.
		openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.PlainBodyDecoder)
	})
	return &contractChecker{t: t, listener: listener, router: router, next: h}
}

// registerHTMLDecoder registers the text/html decoder once: the registry is
// kin-openapi's, global to the test binary.
var registerHTMLDecoder sync.Once

type contractChecker struct {
	t        testing.TB
	listener string
	router   routers.Router
	next     http.Handler
}

// maxCheckedBody bounds the request bodies read for validation; a larger
// one (the too-large tests) goes to the handler unread, unvalidated.
const maxCheckedBody = api.MaxBodyBytes

var checkOptions = &openapi3filter.Options{
	IncludeResponseStatus: true,
	MultiError:            true,
	// Authentication is tested by the tests of the authenticators; here
	// any credential passes, so that bodies and parameters are checked.
	AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
}

// registerPageDecoders lets the checker read the hosted pages' HTML and
// the drop-in's and assets' text (kin-openapi knows JSON and forms only);
// once, as kin-openapi's decoders are global.
var registerPageDecoders = sync.OnceFunc(func() {
	for _, ct := range []string{"text/html", "text/css", "text/javascript"} {
		openapi3filter.RegisterBodyDecoder(ct, openapi3filter.PlainBodyDecoder)
	}
})

func (cc *contractChecker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	registerPageDecoders()
	route, params, err := cc.router.FindRoute(r)
	if err != nil { // not in the contract: a test-only route, or no route
		cc.next.ServeHTTP(w, r)
		return
	}
	body, complete := readUpTo(r, maxCheckedBody)
	in := &openapi3filter.RequestValidationInput{Request: r.Clone(r.Context()), PathParams: params, Route: route, Options: checkOptions}
	in.Request.Body = io.NopCloser(bytes.NewReader(body))
	reqErr := openapi3filter.ValidateRequest(r.Context(), in)
	requestValid := complete && reqErr == nil
	if reqErr != nil && testing.Verbose() {
		// Expected of the bad-input tests; listed so that a contract too
		// strict for good requests shows up in a -v run.
		cc.t.Logf("openapi contract (%s listener): request %s %s does not validate: %v", cc.listener, r.Method, r.URL.Path, reqErr)
	}
	in.Request.Body = http.NoBody

	rec := &recordingWriter{ResponseWriter: w, status: http.StatusOK}
	cc.next.ServeHTTP(rec, r)

	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rec.status,
		Header: rec.sent(), Body: io.NopCloser(bytes.NewReader(rec.body.Bytes())), Options: checkOptions}
	if err := openapi3filter.ValidateResponse(context.WithoutCancel(r.Context()), out); err != nil {
		cc.t.Errorf("openapi contract (%s listener): %s %s answered %d (request valid: %v), which api/openapi.yaml does not describe:\n%v\nbody: %.500s",
			cc.listener, r.Method, r.URL.Path, rec.status, requestValid, err, rec.body.String())
	}
}

// readUpTo reads at most limit bytes of r's body for validation and puts
// back a body that gives the handler all of it, unread bytes included.
// complete says whether the whole body was read.
func readUpTo(r *http.Request, limit int64) ([]byte, bool) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	complete := err == nil && int64(len(buf)) <= limit
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	return buf, complete
}

// recordingWriter passes the answer through and keeps a copy for validation.
type recordingWriter struct {
	http.ResponseWriter
	status  int
	header  http.Header
	written bool
	body    bytes.Buffer
}

func (w *recordingWriter) WriteHeader(status int) {
	if !w.written {
		w.written, w.status, w.header = true, status, w.ResponseWriter.Header().Clone()
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	w.body.Write(p)
	return w.ResponseWriter.Write(p)
}

// sent is the header as it went out (or as it stands, if nothing was written).
func (w *recordingWriter) sent() http.Header {
	if w.header != nil {
		return w.header
	}
	return w.ResponseWriter.Header().Clone()
}

// Flush keeps streaming answers streaming.
func (w *recordingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
