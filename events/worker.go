package events

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/apps"
	"github.com/kluis-dev/kluis/postgres"
)

// WorkerOptions configure a Worker. DB is required; Apps (or, for one app,
// Endpoints and Secret) say where events go; everything else has a default.
type WorkerOptions struct {
	DB *postgres.DB
	// Apps are the apps in force: each event goes to the endpoints of its
	// subject's app (audit.head to every app's), signed with each
	// endpoint's active secrets as the apps stand at the attempt, so that
	// a rotation reaches deliveries already queued.
	Apps *apps.Registry
	// Endpoints and Secret, when Apps is nil, are the default app's
	// endpoints and their one secret (KLUIS_WEBHOOK_ENDPOINTS and
	// KLUIS_WEBHOOK_SECRET).
	Endpoints []string
	Secret    []byte
	// Client sends deliveries; by default one with a 10 s timeout that
	// follows no redirects (a redirect is a failed attempt).
	Client *http.Client
	Logger *slog.Logger
	Clock  kluis.Clock
	// Interval is how often the worker looks for due deliveries (1 s).
	Interval time.Duration
	// Batch bounds the deliveries claimed at once (20).
	Batch int
	// BaseBackoff is the wait after the first failure (30 s); it doubles
	// per attempt up to MaxBackoff (1 h), with jitter (each wait is drawn
	// uniformly from its upper half).
	BaseBackoff, MaxBackoff time.Duration
	// RetryFor is how long after the event attempts go on (72 h; never
	// less than 24 h in production configuration).
	RetryFor time.Duration
	// Lease is how long a claimed delivery stays claimed (1 min): a worker
	// that dies mid-delivery frees it after this.
	Lease time.Duration
}

// Worker delivers the outbox. Run it on every instance: the instances share
// the work.
type Worker struct {
	opts    WorkerOptions
	metrics *deliveryMetrics
	wake    chan struct{}
	done    chan struct{}
}

// NewWorker checks opts and returns a Worker.
func NewWorker(opts WorkerOptions) (*Worker, error) {
	if opts.DB == nil {
		return nil, errors.New("events: DB is required")
	}
	if opts.Apps == nil {
		set, err := apps.Default(apps.Single{Endpoints: opts.Endpoints, Secret: opts.Secret})
		if err != nil {
			return nil, fmt.Errorf("events: %w", err)
		}
		opts.Apps = apps.Static(set)
	}
	w := &Worker{opts: opts, metrics: newDeliveryMetrics(), wake: make(chan struct{}, 1), done: make(chan struct{})}
	w.defaults()
	return w, nil
}

func (w *Worker) defaults() {
	o := &w.opts
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = kluis.SystemClock{}
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Batch <= 0 {
		o.Batch = 20
	}
	if o.BaseBackoff <= 0 {
		o.BaseBackoff = 30 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Hour
	}
	if o.RetryFor <= 0 {
		o.RetryFor = 72 * time.Hour
	}
	if o.Lease <= 0 {
		o.Lease = time.Minute
	}
}

// endpoints are the endpoints in force, by stored key.
func (w *Worker) endpoints() map[string]apps.Endpoint {
	out := map[string]apps.Endpoint{}
	for _, e := range w.opts.Apps.Current().Endpoints() {
		out[e.Key] = e
	}
	return out
}

// Run delivers until ctx ends. Call it once per Worker.
func (w *Worker) Run(ctx context.Context) {
	defer close(w.done)
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	for {
		if _, err := w.Tick(ctx); err != nil && ctx.Err() == nil {
			w.opts.Logger.Error("event delivery pass failed; retrying", "cause", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.wake:
		}
	}
}

// Done is closed when Run has returned.
func (w *Worker) Done() <-chan struct{} { return w.done }

// Wake asks a running worker to look for work now rather than at its next
// tick (after an enqueue, say).
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Tick is one pass: new events get a delivery row per endpoint, then due
// deliveries are claimed and attempted. It returns how many attempts it
// made.
func (w *Worker) Tick(ctx context.Context) (int, error) {
	eps := w.endpoints()
	if len(eps) == 0 {
		return 0, nil
	}
	if err := w.fanOut(ctx, eps); err != nil {
		return 0, err
	}
	claimed, err := w.claim(ctx, eps)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(claimed))
	for i := range claimed {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = w.deliver(ctx, eps, claimed[i])
		}(i)
	}
	wg.Wait()
	return len(claimed), errors.Join(errs...)
}

// fanOut gives every event not yet fanned out one pending delivery per
// endpoint of its app (of every app for an event of none), due at once.
func (w *Worker) fanOut(ctx context.Context, eps map[string]apps.Endpoint) error {
	var keys, shown, owners []string
	for _, ep := range eps {
		keys, shown, owners = append(keys, ep.Key), append(shown, ep.Display()), append(owners, ep.App)
	}
	_, err := w.opts.DB.Pool.Exec(ctx, `
		WITH ev AS (
			SELECT id, created_at, app_id FROM outbox WHERE NOT fanned_out
			ORDER BY created_at LIMIT 500 FOR UPDATE SKIP LOCKED
		), ins AS (
			INSERT INTO outbox_targets (event_id, endpoint_id, endpoint, status, next_attempt_at)
			SELECT ev.id, e.id, e.shown, 'pending', ev.created_at
			FROM ev JOIN unnest($1::text[], $2::text[], $3::text[]) AS e(id, shown, app)
			  ON ev.app_id IS NULL OR ev.app_id = e.app
			ON CONFLICT DO NOTHING
		)
		UPDATE outbox SET fanned_out = true WHERE id IN (SELECT id FROM ev)`, keys, shown, owners)
	if err != nil {
		return fmt.Errorf("events: fan out: %w", postgres.Translate(err))
	}
	return nil
}

// claimedDelivery is one delivery this worker holds the lease of.
type claimedDelivery struct {
	eventID, endpointID string
	attempt             int
	payload             []byte
	createdAt           time.Time
}

// claim leases due deliveries: SKIP LOCKED so that instances claiming at
// once take different rows, and the lease (next_attempt_at in the future)
// so that the row is not claimed again while its attempt runs.
func (w *Worker) claim(ctx context.Context, eps map[string]apps.Endpoint) ([]claimedDelivery, error) {
	ids := make([]string, 0, len(eps))
	for key := range eps {
		ids = append(ids, key)
	}
	now := w.opts.Clock.Now()
	rows, err := w.opts.DB.Pool.Query(ctx, `
		WITH due AS (
			SELECT event_id, endpoint_id FROM outbox_targets
			WHERE status = 'pending' AND next_attempt_at <= $1 AND endpoint_id = ANY($2)
			ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED
		)
		UPDATE outbox_targets t SET next_attempt_at = $4, attempts = t.attempts + 1
		FROM due, outbox o
		WHERE t.event_id = due.event_id AND t.endpoint_id = due.endpoint_id AND o.id = t.event_id
		RETURNING t.event_id, t.endpoint_id, t.attempts, o.payload::text, o.created_at`,
		now, ids, w.opts.Batch, now.Add(w.opts.Lease))
	if err != nil {
		return nil, fmt.Errorf("events: claim: %w", postgres.Translate(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (claimedDelivery, error) {
		var d claimedDelivery
		var payload string
		err := r.Scan(&d.eventID, &d.endpointID, &d.attempt, &payload, &d.createdAt)
		d.payload = []byte(payload)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("events: claim: %w", postgres.Translate(err))
	}
	return out, nil
}

// attemptResult is what one attempt came to.
type attemptResult struct {
	status   int
	err      string
	duration time.Duration
}

func (r attemptResult) ok() bool { return r.err == "" && r.status >= 200 && r.status < 300 }

// deliver makes one attempt and records it.
func (w *Worker) deliver(ctx context.Context, eps map[string]apps.Endpoint, d claimedDelivery) error {
	ep, ok := eps[d.endpointID]
	if !ok {
		return nil
	}
	res := w.post(ctx, ep, d)
	if ctx.Err() != nil {
		// Stopping: the lease runs out and another pass tries again.
		return nil
	}
	w.metrics.observe(ep, res)
	return w.record(context.WithoutCancel(ctx), ep, d, res)
}

func (w *Worker) post(ctx context.Context, ep apps.Endpoint, d claimedDelivery) attemptResult {
	now := w.opts.Clock.Now()
	secrets := ep.Active(now)
	if len(secrets) == 0 {
		// Every secret retired: nothing goes out unsigned. The attempt
		// fails and is retried, so that a fixed apps file delivers it.
		return attemptResult{err: "no active secret"}
	}
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(d.payload))
	if err != nil {
		return attemptResult{err: "bad request"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "kluis-webhooks/1")
	req.Header.Set("Kluis-Event-Id", d.eventID)
	req.Header.Set("Kluis-Delivery-Attempt", fmt.Sprint(d.attempt))
	req.Header.Set(SignatureHeader, SignAll(secrets, now.Unix(), d.payload))
	resp, err := w.opts.Client.Do(req)
	if err != nil {
		// Go's errors name the URL, query and all: keep only the kind.
		reason := "network error"
		if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Timeout") {
			reason = "timeout"
		}
		return attemptResult{err: reason, duration: time.Since(start)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close() // drained; only the status matters
	r := attemptResult{status: resp.StatusCode, duration: time.Since(start)}
	if !r.ok() {
		r.err = fmt.Sprintf("status %d", resp.StatusCode)
	}
	return r
}

// record writes the attempt and moves the delivery on: delivered, due
// again after a backoff, or dead once the retry period is over. The update
// holds only while this worker's lease does (attempts unchanged).
func (w *Worker) record(ctx context.Context, ep apps.Endpoint, d claimedDelivery, res attemptResult) error {
	now := w.opts.Clock.Now()
	return w.opts.DB.InTx(ctx, func(tx pgx.Tx) error {
		outcome := "failed"
		if res.ok() {
			outcome = "delivered"
		}
		var status *int
		if res.status != 0 {
			status = &res.status
		}
		_, err := tx.Exec(ctx, `
			INSERT INTO outbox_deliveries (event_id, endpoint_id, attempt, attempted_at, status_code, outcome, error, duration_ms)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			d.eventID, d.endpointID, d.attempt, now, status, outcome, res.err, res.duration.Milliseconds())
		if err != nil {
			return fmt.Errorf("events: record attempt: %w", postgres.Translate(err))
		}
		switch {
		case res.ok():
			_, err = tx.Exec(ctx, `UPDATE outbox_targets SET status = 'delivered', delivered_at = $3
				WHERE event_id = $1 AND endpoint_id = $2 AND status = 'pending'`, d.eventID, d.endpointID, now)
		case now.Sub(d.createdAt) >= w.opts.RetryFor:
			_, err = tx.Exec(ctx, `UPDATE outbox_targets SET status = 'dead'
				WHERE event_id = $1 AND endpoint_id = $2 AND status = 'pending' AND attempts = $3`, d.eventID, d.endpointID, d.attempt)
			w.opts.Logger.Warn("event delivery given up", "event_id", d.eventID, "app", ep.App, "endpoint_id", ep.ID, "attempts", d.attempt)
			w.metrics.dead.WithLabelValues(ep.App, ep.ID).Inc()
		default:
			_, err = tx.Exec(ctx, `UPDATE outbox_targets SET next_attempt_at = $4
				WHERE event_id = $1 AND endpoint_id = $2 AND status = 'pending' AND attempts = $3`,
				d.eventID, d.endpointID, d.attempt, now.Add(w.backoff(d.attempt)))
		}
		if err != nil {
			return fmt.Errorf("events: record outcome: %w", postgres.Translate(err))
		}
		return nil
	})
}

// backoff is the wait after the attempt-th failure: BaseBackoff doubled per
// attempt, capped at MaxBackoff, drawn from the upper half (jitter, so that
// a receiver coming back is not hit by every instance at once).
func (w *Worker) backoff(attempt int) time.Duration {
	d := w.opts.BaseBackoff
	for i := 1; i < attempt && d < w.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, w.opts.MaxBackoff)
	half := d / 2
	if half <= 0 {
		return d
	}
	n, err := rand.Int(rand.Reader, big.NewInt(int64(half)))
	if err != nil {
		return d
	}
	return half + time.Duration(n.Int64())
}
