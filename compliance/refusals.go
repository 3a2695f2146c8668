package compliance

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
)

// ActionRefused is the action of an aggregated entry: the refused requests
// of one source address in one minute.
const ActionRefused = "access.refused"

// Kinds of refusal an aggregated entry counts.
const (
	RefusalAuthn   = "authn.failed"    // no or a bad token or client certificate
	RefusalAuthz   = "authz.denied"    // authenticated, but refused at the door
	RefusalWebhook = "webhook.refused" // a provider webhook whose signature is bad
)

// Defaults of RefusalOptions.
const (
	DefaultRefusalSources = 1000
	DefaultRefusalPending = 60
	refusalPeriod         = time.Minute
	// maxBreakdown bounds each per-entry breakdown (reasons, routes,
	// actors): beyond it a value is counted under "other". Reasons and routes
	// come from fixed sets, but an actor is the caller's choice.
	maxBreakdown = 16
	// OverflowSource is the source of the entry that counts the refusals
	// of every address past the cap in one minute.
	OverflowSource = "overflow"
	// flushTimeout bounds one write of the aggregated entries.
	flushTimeout = 10 * time.Second
)

// Refusal is one refused request, to be audited in aggregate. None of its
// fields may hold a token or a secret: Reason is a fixed category, Route a
// route template, Actor what the caller claimed to be (a service name, a
// certificate serial).
type Refusal struct {
	// Source is the client address; entries carry only its keyed pseudonym.
	Source    string
	Kind      string
	Reason    string
	Route     string
	Actor     string
	RequestID string
}

// RefusalOptions tune a Refusals. Zero values take the defaults.
type RefusalOptions struct {
	// MaxSources bounds the addresses counted apart in one minute; the
	// rest share one entry whose source is OverflowSource.
	MaxSources int
	// MaxPending bounds the minutes kept in memory while the audit log
	// cannot be written; older ones are dropped, and their loss is logged.
	MaxPending int
	Clock      kluis.Clock
	Logger     *slog.Logger
}

// Refusals audits failed authentications and refused webhooks in aggregate:
// at most one entry per source address and minute (plus one for the
// addresses past the cap), carrying the count, the first and last time,
// and the reasons, routes and claimed actors seen, so that a flood of bad
// tokens costs the audit log one row a minute per address instead of one per
// request. Note never blocks on the database; Run writes each minute once it
// has ended and everything left when it stops. It is safe for concurrent
// use.
type Refusals struct {
	auditor *audit.Auditor
	opts    RefusalOptions

	mu      sync.Mutex
	windows map[time.Time]*refusalWindow

	flushMu sync.Mutex // one writer at a time, so a Flush returns after any flush before it
}

type refusalWindow struct {
	start    time.Time
	sources  map[string]*refusalBucket
	overflow *refusalBucket
}

type refusalBucket struct {
	count                  int
	first, last            time.Time
	firstReq, lastReq      string
	kinds, reasons, routes map[string]int
	actors                 map[string]int
}

// NewRefusals returns a Refusals writing through a.
func NewRefusals(a *audit.Auditor, o RefusalOptions) *Refusals {
	if o.MaxSources <= 0 {
		o.MaxSources = DefaultRefusalSources
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultRefusalPending
	}
	if o.Clock == nil {
		o.Clock = kluis.SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Refusals{auditor: a, opts: o, windows: map[time.Time]*refusalWindow{}}
}

// Note counts one refusal in the current minute. It takes a lock for a few
// map updates and never waits on I/O.
func (r *Refusals) Note(f Refusal) {
	now := r.opts.Clock.Now().UTC()
	start := now.Truncate(refusalPeriod)
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.windows[start]
	if w == nil {
		w = &refusalWindow{start: start, sources: map[string]*refusalBucket{}}
		r.windows[start] = w
	}
	b := w.sources[f.Source]
	if b == nil {
		if len(w.sources) < r.opts.MaxSources {
			b = &refusalBucket{}
			w.sources[f.Source] = b
		} else {
			if w.overflow == nil {
				w.overflow = &refusalBucket{}
			}
			b = w.overflow
		}
	}
	b.add(f, now)
}

func (b *refusalBucket) add(f Refusal, now time.Time) {
	if b.count == 0 {
		b.first, b.firstReq = now, f.RequestID
		b.kinds, b.reasons, b.routes, b.actors = map[string]int{}, map[string]int{}, map[string]int{}, map[string]int{}
	}
	b.count++
	b.last, b.lastReq = now, f.RequestID
	tally(b.kinds, f.Kind)
	tally(b.reasons, f.Reason)
	tally(b.routes, f.Route)
	if f.Actor != "" {
		tally(b.actors, f.Actor)
	}
}

// tally counts v in m, or under "other" once m holds maxBreakdown values.
func tally(m map[string]int, v string) {
	if _, ok := m[v]; !ok && len(m) >= maxBreakdown {
		v = "other"
	}
	m[v]++
}

// merge adds o's counts to b (a window put back after a failed write meets
// the refusals noted since).
func (b *refusalBucket) merge(o *refusalBucket) {
	if o == nil || o.count == 0 {
		return
	}
	if b.count == 0 {
		*b = *o
		return
	}
	if o.first.Before(b.first) {
		b.first, b.firstReq = o.first, o.firstReq
	}
	if o.last.After(b.last) {
		b.last, b.lastReq = o.last, o.lastReq
	}
	b.count += o.count
	for _, p := range [][2]map[string]int{{b.kinds, o.kinds}, {b.reasons, o.reasons}, {b.routes, o.routes}, {b.actors, o.actors}} {
		for k, n := range p[1] {
			if _, ok := p[0][k]; !ok && len(p[0]) >= maxBreakdown {
				k = "other"
			}
			p[0][k] += n
		}
	}
}

// FlushDue writes the minutes that have ended.
func (r *Refusals) FlushDue(ctx context.Context) error {
	return r.flush(ctx, false)
}

// Flush writes every minute, the current one too: at shutdown, and in
// tests.
func (r *Refusals) Flush(ctx context.Context) error {
	return r.flush(ctx, true)
}

func (r *Refusals) flush(ctx context.Context, all bool) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	taken := r.take(all)
	if len(taken) == 0 {
		return nil
	}
	entries := make([]audit.Entry, 0, len(taken))
	for _, w := range taken {
		entries = append(entries, w.entries(r.auditor)...)
	}
	if err := r.auditor.RecordAll(ctx, entries); err != nil {
		r.putBack(taken)
		return kluis.Unavailable("audit log", err)
	}
	return nil
}

// take removes the windows to write: those that ended, or all.
func (r *Refusals) take(all bool) []*refusalWindow {
	now := r.opts.Clock.Now().UTC()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*refusalWindow
	for start, w := range r.windows {
		if all || !now.Before(start.Add(refusalPeriod)) {
			out = append(out, w)
			delete(r.windows, start)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start.Before(out[j].start) })
	return out
}

// putBack returns windows that could not be written, merging them with
// what was noted meanwhile, and drops the oldest beyond MaxPending so that
// an audit log that stays down cannot exhaust memory. What is dropped is
// logged with its counts: the loss is recorded, if not in the audit log.
func (r *Refusals) putBack(ws []*refusalWindow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range ws {
		cur := r.windows[w.start]
		if cur == nil {
			r.windows[w.start] = w
			continue
		}
		for src, b := range w.sources {
			if cb := cur.sources[src]; cb != nil {
				cb.merge(b)
			} else if len(cur.sources) < r.opts.MaxSources {
				cur.sources[src] = b
			} else {
				if cur.overflow == nil {
					cur.overflow = &refusalBucket{}
				}
				cur.overflow.merge(b)
			}
		}
		if w.overflow != nil {
			if cur.overflow == nil {
				cur.overflow = &refusalBucket{}
			}
			cur.overflow.merge(w.overflow)
		}
	}
	for len(r.windows) > r.opts.MaxPending {
		var oldest *refusalWindow
		for _, w := range r.windows {
			if oldest == nil || w.start.Before(oldest.start) {
				oldest = w
			}
		}
		delete(r.windows, oldest.start)
		n := 0
		for _, b := range oldest.sources {
			n += b.count
		}
		if oldest.overflow != nil {
			n += oldest.overflow.count
		}
		r.opts.Logger.Error("audit log unavailable: refused requests of one minute could not be audited",
			"minute", oldest.start.Format(time.RFC3339), "refusals", n, "sources", len(oldest.sources))
	}
}

// entries turns a window into its audit entries, sources in a stable order.
func (w *refusalWindow) entries(a *audit.Auditor) []audit.Entry {
	srcs := make([]string, 0, len(w.sources))
	for s := range w.sources {
		srcs = append(srcs, s)
	}
	sort.Strings(srcs)
	out := make([]audit.Entry, 0, len(srcs)+1)
	for _, s := range srcs {
		source := ""
		if s != "" {
			source = a.PseudonymOf("client_ip", s)
		}
		out = append(out, w.sources[s].entry(w.start, source))
	}
	if w.overflow != nil {
		out = append(out, w.overflow.entry(w.start, OverflowSource))
	}
	return out
}

func (b *refusalBucket) entry(start time.Time, source string) audit.Entry {
	details := map[string]any{
		"count": b.count, "source": source,
		"window_start": start.Format(time.RFC3339),
		"first_at":     b.first.Format(time.RFC3339Nano), "last_at": b.last.Format(time.RFC3339Nano),
		"first_request_id": b.firstReq, "last_request_id": b.lastReq,
		"kinds": b.kinds, "reasons": b.reasons, "routes": b.routes,
	}
	if len(b.actors) > 0 {
		details["actors"] = b.actors
	}
	return audit.Entry{
		ActorKind: audit.ActorAnonymous, Action: ActionRefused, Outcome: audit.OutcomeDenied,
		RequestID: b.firstReq, Details: details,
	}
}

// Run writes each minute once it has ended, checking every interval, until
// ctx ends; then it writes everything still counted (with a fresh deadline
// of its own, since ctx is gone), so that a stop loses no count. A failed
// write is logged and retried at the next check.
func (r *Refusals) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
			defer cancel()
			if err := r.Flush(stop); err != nil {
				r.opts.Logger.Error("refused requests could not be audited at shutdown", "cause", err.Error())
			}
			return
		case <-t.C:
			// Bounded, so that a database that does not answer cannot hold
			// the writer (and the final flush behind it) for good.
			fctx, cancel := context.WithTimeout(ctx, flushTimeout)
			if err := r.FlushDue(fctx); err != nil {
				r.opts.Logger.Warn("refused requests not audited yet; retrying", "cause", err.Error())
			}
			cancel()
		}
	}
}
