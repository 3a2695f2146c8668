package apitest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// errorRecorder is a testing.TB that keeps what Errorf reports.
type errorRecorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *errorRecorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestTheContractCheckReportsAnswersTheContractDoesNotDescribe(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		listener     string
		method, path string
		body         string
		status       int
		answer       string
		wantReport   bool
	}{
		{"a documented answer passes", ListenerPublic, "GET", "/healthz", "", 200, `{"status":"ok"}`, false},
		{"a body of the wrong shape is reported", ListenerPublic, "GET", "/healthz", "", 200, `{"status":"nope"}`, true},
		{"an undocumented status is reported", ListenerPublic, "GET", "/healthz", "", 418, `{}`, true},
		{"an internal-only route on the public listener is not checked", ListenerPublic, "GET", "/metrics", "", 404, `{}`, false},
		{"a route outside the contract is not checked", ListenerPublic, "GET", "/test/anything", "", 418, `x`, false},
		{"an invalid request still has its answer checked", ListenerInternal, "POST", "/compliance/v1/legal-holds", `{"nope":1}`, 200, `{}`, true},
		{"an invalid request with a documented answer passes", ListenerInternal, "POST", "/compliance/v1/legal-holds", `{"nope":1}`, 400,
			`{"error":{"code":"invalid_request","message":"m","request_id":"r"}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := &errorRecorder{TB: t}
			h := checkContract(rec, tc.listener, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.answer))
			}))
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tc.status || w.Body.String() != tc.answer {
				t.Errorf("the answer was changed on its way: %d %q", w.Code, w.Body.String())
			}
			if got := len(rec.errs) > 0; got != tc.wantReport {
				t.Errorf("reported = %v, want %v: %v", got, tc.wantReport, rec.errs)
			}
		})
	}
}

func TestATestCanOptOutOfTheContractCheck(t *testing.T) {
	t.Parallel()
	if env := Start(t); !env.checked {
		t.Error("Start: the contract check is off, want on")
	}
	if env := Start(t, WithoutContractCheck()); env.checked {
		t.Error("Start(WithoutContractCheck()): the contract check is on, want off")
	}
}
