package client

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"math/big"
	"net/http"
	"time"
)

// RetryPolicy says how the client retries an answer the contract says is
// safe to retry: a 503 (a dependency could not do its part; nothing was
// done) or a 429 (a limit was spent; nothing was done), each with
// Retry-After, of an idempotent call: a GET, HEAD or DELETE, or a POST,
// which always carries an Idempotency-Key, so that kluis replays rather
// than repeats it. Nothing else is retried: not a network error (the
// request may have been done), not a 500.
type RetryPolicy struct {
	// MaxRetries is how many times one call is retried (0: 3; negative:
	// never).
	MaxRetries int
	// Base is the backoff's first step, doubled on each retry and added,
	// with jitter, to what Retry-After asks (0: 200 ms).
	Base time.Duration
	// MaxWait is the longest wait the client accepts: an answer asking for
	// longer (a lockout of days) is returned as the error (0: 30 s).
	MaxWait time.Duration
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxRetries == 0 {
		p.MaxRetries = 3
	}
	if p.Base <= 0 {
		p.Base = 200 * time.Millisecond
	}
	if p.MaxWait <= 0 {
		p.MaxWait = 30 * time.Second
	}
	return p
}

// headerIdempotencyKey is the contract's Idempotency-Key.
const headerIdempotencyKey = "Idempotency-Key"

// doer is the HTTP client the generated code calls: it gives every POST an
// Idempotency-Key (unless the caller set one) and retries what the policy
// allows, with the same key, so a retried POST is never done twice.
type doer struct {
	hc     *http.Client
	policy RetryPolicy
	// sleep waits d or until ctx ends (a field so tests need not wait).
	sleep func(ctx context.Context, d time.Duration) error
}

func (d *doer) Do(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost && req.Header.Get(headerIdempotencyKey) == "" {
		key, err := NewIdempotencyKey()
		if err != nil {
			return nil, err
		}
		req.Header.Set(headerIdempotencyKey, key)
	}
	for attempt := 0; ; attempt++ {
		resp, err := d.hc.Do(req)
		if err != nil {
			return nil, err
		}
		wait, ok := d.retryWait(req, resp, attempt)
		if !ok {
			return resp, nil
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		_ = resp.Body.Close()
		if err := d.sleep(req.Context(), wait); err != nil {
			return nil, err
		}
		if req, err = rewind(req); err != nil {
			return nil, err
		}
	}
}

// retryWait says whether resp may be retried and after how long.
func (d *doer) retryWait(req *http.Request, resp *http.Response, attempt int) (time.Duration, bool) {
	if resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusTooManyRequests {
		return 0, false
	}
	ra := retryAfter(resp.Header)
	if resp.Header.Get("Retry-After") == "" || ra > d.policy.MaxWait || attempt >= d.policy.MaxRetries || !idempotent(req) {
		return 0, false
	}
	step := d.policy.Base << attempt
	return min(ra+jitter(step), d.policy.MaxWait), true
}

// idempotent reports whether req may be sent again: by its method, or by
// its Idempotency-Key.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodOptions, http.MethodPut:
		return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	}
	return req.Header.Get(headerIdempotencyKey) != "" && (req.Body == nil || req.Body == http.NoBody || req.GetBody != nil)
}

// rewind gives req a fresh body for its next attempt.
func rewind(req *http.Request) (*http.Request, error) {
	if req.GetBody == nil {
		return req, nil
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	next := req.Clone(req.Context())
	next.Body = body
	return next, nil
}

// jitter is a random duration in [step/2, step): spread so that clients
// refused together do not come back together.
func jitter(step time.Duration) time.Duration {
	if step <= 1 {
		return step
	}
	n, err := rand.Int(rand.Reader, big.NewInt(int64(step/2)))
	if err != nil {
		return step / 2
	}
	return step/2 + time.Duration(n.Int64())
}

// sleepCtx waits d or until ctx ends. It is the client's own, not
// kluis.Sleep: the client is what apps import, and must not pull in the
// server's root package.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// NewIdempotencyKey makes a fresh Idempotency-Key: 24 random bytes in
// unpadded base64url (32 printable characters). The client sets one on
// every POST by itself; set your own (kluisapi's Params, or the header in a
// RequestEditorFn) to make a retry of yours, after a crash say, replay the
// first answer.
func NewIdempotencyKey() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
