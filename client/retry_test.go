package client

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// answers is a server that gives the queued answers in order (the last one
// again once they run out) and records each request.
type answers struct {
	mu    sync.Mutex
	queue []func(w http.ResponseWriter)
	got   []*http.Request
	body  []string
}

func (a *answers) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.got, a.body = append(a.got, r), append(a.body, string(b))
	next := a.queue[0]
	if len(a.queue) > 1 {
		a.queue = a.queue[1:]
	}
	a.mu.Unlock()
	next(w)
}

func status(code int, retryAfter string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, `{"error":{"code":"x","message":"m","request_id":"req_1"}}`)
	}
}

func TestOnlyWhatTheContractSaysIsSafeIsRetried(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		method   string
		answers  []func(http.ResponseWriter)
		attempts int
		final    int
	}{
		{"a POST's 503 with Retry-After is retried until it succeeds", http.MethodPost,
			[]func(http.ResponseWriter){status(503, "1"), status(503, "1"), status(200, "")}, 3, 200},
		{"a GET's 429 with Retry-After is retried", http.MethodGet,
			[]func(http.ResponseWriter){status(429, "2"), status(200, "")}, 2, 200},
		{"a 503 without Retry-After is not retried", http.MethodPost,
			[]func(http.ResponseWriter){status(503, ""), status(200, "")}, 1, 503},
		{"a 500 is not retried", http.MethodGet,
			[]func(http.ResponseWriter){status(500, "1"), status(200, "")}, 1, 500},
		{"a 409 is not retried", http.MethodPost,
			[]func(http.ResponseWriter){status(409, "1"), status(200, "")}, 1, 409},
		{"a wait longer than MaxWait is the answer", http.MethodPost,
			[]func(http.ResponseWriter){status(429, "2592000"), status(200, "")}, 1, 429},
		{"retries stop after MaxRetries", http.MethodGet,
			[]func(http.ResponseWriter){status(503, "1")}, 4, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := &answers{queue: tc.answers}
			ts := httptest.NewServer(srv)
			defer ts.Close()
			var waits []time.Duration
			d := &doer{hc: ts.Client(), policy: RetryPolicy{}.withDefaults(),
				sleep: func(_ context.Context, w time.Duration) error { waits = append(waits, w); return nil }}
			var body io.Reader
			if tc.method == http.MethodPost {
				body = strings.NewReader(`{"purpose":"p"}`)
			}
			req, err := http.NewRequest(tc.method, ts.URL, body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := d.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.final || len(srv.got) != tc.attempts {
				t.Fatalf("final %d after %d attempts, want %d after %d", resp.StatusCode, len(srv.got), tc.final, tc.attempts)
			}
			for i, r := range srv.got {
				key := r.Header.Get("Idempotency-Key")
				if tc.method == http.MethodPost && (key == "" || key != srv.got[0].Header.Get("Idempotency-Key") || srv.body[i] != `{"purpose":"p"}`) {
					t.Errorf("attempt %d: key %q body %q, want the first attempt's key and body", i, key, srv.body[i])
				}
				if tc.method == http.MethodGet && key != "" {
					t.Errorf("a GET carries an Idempotency-Key %q", key)
				}
			}
			for _, w := range waits {
				if w < time.Second {
					t.Errorf("waited %v, less than Retry-After", w)
				}
			}
		})
	}
}

func TestACallersOwnIdempotencyKeyIsKept(t *testing.T) {
	t.Parallel()
	srv := &answers{queue: []func(http.ResponseWriter){status(200, "")}}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	d := &doer{hc: ts.Client(), policy: RetryPolicy{}.withDefaults(), sleep: sleepCtx}
	req, _ := http.NewRequest(http.MethodPost, ts.URL, strings.NewReader("{}"))
	req.Header.Set("Idempotency-Key", "mine-1")
	resp, err := d.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := srv.got[0].Header.Get("Idempotency-Key"); got != "mine-1" {
		t.Errorf("Idempotency-Key = %q, want the caller's", got)
	}
}

func TestAWaitEndsWithTheContext(t *testing.T) {
	t.Parallel()
	srv := &answers{queue: []func(http.ResponseWriter){status(503, "5")}}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	d := &doer{hc: ts.Client(), policy: RetryPolicy{}.withDefaults(), sleep: sleepCtx}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL, nil)
	if _, err := d.Do(req); err == nil {
		t.Fatal("a cancelled call returned no error")
	}
}

func TestAnErrorThatIsNotTheContractsShapeStillHasItsStatus(t *testing.T) {
	t.Parallel()
	e := errorFrom(&http.Response{StatusCode: 502, Header: http.Header{}}, []byte("<html>bad gateway</html>"))
	if e.Status != 502 || e.Code != "Bad Gateway" {
		t.Errorf("error = %+v", e)
	}
	e = errorFrom(&http.Response{StatusCode: 409, Header: http.Header{}},
		[]byte(`{"error":{"code":"verification_locked","message":"m","request_id":"r","locked_until":"2030-01-01T00:00:00Z"}}`))
	if e.Code != "verification_locked" || e.Fields["locked_until"] != "2030-01-01T00:00:00Z" || !strings.Contains(e.Error(), "verification_locked") {
		t.Errorf("error = %+v", e)
	}
}

// FuzzErrorFrom: whatever a server (or a proxy in front of it) answers, the
// error keeps the status and reading it never panics.
func FuzzErrorFrom(f *testing.F) {
	f.Add(409, []byte(`{"error":{"code":"legal_hold","message":"m","request_id":"r"}}`), "5")
	f.Add(503, []byte(`{"error":{"code":"unavailable","reason":"institution_down","retry_after_seconds":5}}`), "x")
	f.Add(502, []byte(`<html>`), "")
	f.Add(400, []byte(`{"error":null}`), "-1")
	f.Add(422, []byte(`{"error":{"code":7,"field":["a"]}}`), "99999999999999999999")
	f.Fuzz(func(t *testing.T, status int, body []byte, retry string) {
		h := http.Header{}
		h.Set("Retry-After", retry)
		e := errorFrom(&http.Response{StatusCode: status, Header: h}, body)
		if e.Status != status || e.RetryAfter < 0 {
			t.Fatalf("errorFrom = %+v", e)
		}
		_ = e.Error()
	})
}
