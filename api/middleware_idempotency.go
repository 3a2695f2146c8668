package api

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api/idempotency"
	"github.com/kluis-dev/kluis/vault"
)

// Error codes of the Idempotency-Key rules (docs/SECURITY.md,
// "Idempotency-Key").
const (
	EIdempotencyKeyReused = "idempotency_key_reused"
	EIdempotencyKeyInUse  = "idempotency_key_in_use"
)

const (
	headerIdempotencyKey = "Idempotency-Key"
	// headerReplayed marks an answer replayed from the store.
	headerReplayed = "Idempotent-Replayed"
	// storeTimeout bounds storing or releasing an answer after the handler
	// ran, on a context that outlives the request's.
	storeTimeout = 3 * time.Second
	// purgeOneIn: about one keyed request in this many also deletes a batch
	// of expired keys, so the table does not grow without a scheduled job.
	purgeOneIn = 256
)

// replayedHeaders are the response headers stored and replayed with a body;
// the rest (no-store and friends) every answer gets anyway.
var replayedHeaders = []string{echo.HeaderContentType, echo.HeaderLocation}

// idempotent applies the Idempotency-Key rules (docs/SECURITY.md) to POSTs: the first
// request with a key runs and its answer (below 500) is stored sealed; the
// same key with the same request replays it; with another request, 422;
// while the first runs, 409. Keys are scoped to the caller, so one caller's
// key never meets another's. A 5xx releases the key, so that a retry runs.
//
// Reveal takes a key like every POST (api/openapi.yaml), but its answer is a secret:
// a stored copy would outlive the credential's erasure. So for reveal only
// the claim is stored (for 409 and 422), never the answer, and a repeat with
// the same key and body reveals afresh: audited again, and a 404 once the
// credential is gone.
func (d *Deps) idempotent(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		values := r.Header.Values(headerIdempotencyKey)
		if r.Method != http.MethodPost || len(values) == 0 {
			return next(c)
		}
		if len(values) > 1 || !idempotency.ValidKey(values[0]) {
			return kluis.Errorf(kluis.EInvalid, "Idempotency-Key must be one header of 1 to 255 printable ASCII characters")
		}
		if d.idem == nil {
			return next(c)
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				return kluis.Errorf(kluis.ETooLarge, "request body is larger than 1 MiB")
			}
			return kluis.Errorf(kluis.EInvalid, "request body could not be read")
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		claim, err := d.claimFor(c, values[0], body)
		if err != nil {
			return err
		}
		if sub := Subject(c); sub != "" {
			// The stored answer belongs to the subject and goes with them
			// on erasure.
			id, err := vault.EnsureSubject(r.Context(), d.DB.Pool, sub)
			if err != nil {
				return err
			}
			claim.SubjectID = &id
		}
		return d.runOnce(c, next, claim)
	}
}

// runOnce claims the key and runs the handler, or answers from the store.
func (d *Deps) runOnce(c echo.Context, next echo.HandlerFunc, claim *idempotency.Claim) error {
	ctx := c.Request().Context()
	outcome, stored, err := d.idem.Begin(ctx, claim)
	switch {
	case errors.Is(err, idempotency.ErrSealed):
		d.Logger.ErrorContext(ctx, "stored idempotent answer does not open", "request_id", requestID(c))
		return kluis.Errorf(kluis.EInternal, "internal error")
	case err != nil:
		return err
	case outcome == idempotency.Replay && answerNotStored(c):
		c.Response().Header().Set(headerReplayed, "true")
		return next(c)
	case outcome == idempotency.Replay:
		return replay(c, stored)
	case outcome == idempotency.InUse:
		return kluis.Errorf(EIdempotencyKeyInUse, "a request with this Idempotency-Key is still running; retry later")
	case outcome == idempotency.Reused:
		return kluis.Errorf(EIdempotencyKeyReused, "this Idempotency-Key was used with a different request")
	}
	c.Set(ctxIdemClaim, claim)
	purge := rand.IntN(purgeOneIn) == 0 // #nosec G404 -- when to purge is no secret
	if purge {
		go d.purgeIdempotencyKeys()
	}
	capture := &captureWriter{ResponseWriter: c.Response().Writer}
	c.Response().Writer = capture
	finished := false
	defer func() {
		if !finished { // a panic: let a retry run
			d.settle(c, claim, nil)
		}
	}()
	if err := next(c); err != nil {
		// Answer here, so that the answer can be stored; the deadline's
		// 503 is decided here too, as withDeadline would.
		c.Error(deadlineError(ctx, err))
	}
	finished = true
	d.settle(c, claim, capture)
	return nil
}

// settle stores the answer, or releases the key after a 5xx (or a panic,
// capture nil), on a context that survives the request's deadline.
func (d *Deps) settle(c echo.Context, claim *idempotency.Claim, capture *captureWriter) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), storeTimeout)
	defer cancel()
	status := c.Response().Status
	var err error
	if capture == nil || status >= 500 || !c.Response().Committed {
		err = d.idem.Release(ctx, claim)
	} else {
		headers := http.Header{}
		for _, h := range replayedHeaders {
			if v := c.Response().Header().Get(h); v != "" {
				headers.Set(h, v)
			}
		}
		body := capture.buf.Bytes()
		if answerNotStored(c) {
			headers, body = http.Header{}, nil
		}
		err = d.idem.Complete(ctx, claim, idempotency.Response{Status: status, Headers: headers, Body: body})
		clear(capture.buf.Bytes())
	}
	if err != nil {
		// The claim lapses after its lock time; until then the key answers 409.
		d.Logger.WarnContext(ctx, "idempotency key not settled", "request_id", requestID(c), "cause", err.Error())
	}
}

func (d *Deps) purgeIdempotencyKeys() {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if _, err := d.idem.Purge(ctx, 1000); err != nil {
		d.Logger.Warn("purge of expired idempotency keys failed", "cause", err.Error())
	}
}

// answerNotStored reports whether the route's answer is a secret that is
// never kept (reveal, the complete subject export): only its claim is.
func answerNotStored(c echo.Context) bool {
	op := operationOf(c)
	return op == OpReveal || op == opExportArchive
}

// replay writes a stored answer.
func replay(c echo.Context, r *idempotency.Response) error {
	for _, h := range replayedHeaders {
		if v := r.Headers.Get(h); v != "" {
			c.Response().Header().Set(h, v)
		}
	}
	c.Response().Header().Set(headerReplayed, "true")
	c.Response().WriteHeader(r.Status)
	_, err := c.Response().Write(r.Body)
	return err
}

// claimFor makes the request's claim under the idempotency system key
// (idempotency.NewClaim says how). Without the system key there is no
// claim: the request fails closed (503).
func (d *Deps) claimFor(c echo.Context, key string, body []byte) (*idempotency.Claim, error) {
	if d.MACs == nil {
		return nil, kluis.Unavailable("key store", errors.New("idempotency: no system keys configured"))
	}
	mac := func(label string, parts ...[]byte) ([]byte, error) {
		m, err := d.MACs.MAC(idempotency.SystemKey, append([][]byte{[]byte(label)}, parts...)...)
		if err != nil {
			return nil, kluis.Unavailable("key store", err)
		}
		return m, nil
	}
	names := c.ParamNames()
	params := make([]string, 0, len(names))
	for i, n := range names {
		params = append(params, n+"="+c.ParamValues()[i])
	}
	return idempotency.NewClaim(mac, idempotency.Request{
		Scope: idempotencyScope(c), Key: key, Method: c.Request().Method, Path: c.Path(), Params: params, Body: body,
	}, d.RequestTimeout+storeTimeout+5*time.Second, d.IdempotencyTTL)
}

// MACer computes keyed MACs under a named system key (vault.SystemKeys).
// MAC fails when the key cannot be had; callers fail closed.
type MACer interface {
	MAC(name string, parts ...[]byte) ([]byte, error)
}

// ctxIdemClaim holds the request's idempotency claim, for handlers that
// name the subject a staff request acts on (bindIdempotencySubject).
const ctxIdemClaim = "kluis.idempotency.claim"

// bindIdempotencySubject ties the stored answer of a request that acts on
// a subject (a compliance request names one by external id) to that
// subject, so that erasure deletes it with the rest of their data: its
// body and fingerprint are about them. A subject kluis does not know
// leaves the claim as it is (there is nothing of theirs to erase with).
func (d *Deps) bindIdempotencySubject(c echo.Context, external string) error {
	claim, ok := c.Get(ctxIdemClaim).(*idempotency.Claim)
	if !ok || claim.SubjectID != nil {
		return nil
	}
	id, err := vault.LookupSubject(c.Request().Context(), d.DB.Pool, external)
	switch {
	case kluis.ErrorCode(err) == kluis.ENotFound:
		return nil
	case err != nil:
		return err
	}
	claim.SubjectID = &id
	return nil
}

// idempotencyScope is the caller a key belongs to: the staff member on
// compliance routes, the user on /v1, else the service.
func idempotencyScope(c echo.Context) string {
	if s := StaffID(c); s != "" {
		return "staff:" + s
	}
	if s := Subject(c); s != "" {
		return "user:" + s
	}
	return "service:" + serviceName(c)
}

// captureWriter copies what the handler writes, for the store.
type captureWriter struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (w *captureWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *captureWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
