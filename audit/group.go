package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// DefaultGroupMax is how many entries one group commit takes at most.
const DefaultGroupMax = 256

// DefaultGroupTimeout bounds one group commit: a caller waits at most about
// twice this long (the batch ahead of its own, then its own).
const DefaultGroupTimeout = 5 * time.Second

// Group commits the entries of concurrent callers together: every caller
// that arrives while a commit is under way joins the next one, so that N
// reveals at once cost about two commits instead of N. Record still returns
// only once the caller's own entry is committed (or is known not to be), so
// a secret never leaves before its entry is durable.
//
// It runs no goroutine of its own: the first caller to find no commit under
// way leads (commits the queue, itself included, in the caller's
// goroutine), and when it is done hands the lead to the first caller still
// waiting, whose batch holds everyone who queued meanwhile. So there is
// nothing to start or stop, and nothing outlives the callers. A batch that
// fails is retried one entry per transaction, so that one entry Postgres
// refuses costs no other caller its reveal. It is safe for concurrent use.
type Group struct {
	a       *Auditor
	max     int
	timeout time.Duration

	mu      sync.Mutex
	queue   []*groupWaiter
	leading bool

	// beforeCommit, set only by this package's tests, runs in the leader
	// before each batch's commit.
	beforeCommit func(batch int)
}

// groupWaiter is one caller's entry, encoded, and its two signals: its
// result, or the lead handed to it.
type groupWaiter struct {
	row  entryRow
	done chan error
	lead chan struct{}
}

// GroupOptions tune a Group; zero values take the defaults.
type GroupOptions struct {
	// Max is the most entries one commit takes (DefaultGroupMax).
	Max int
	// Timeout bounds each commit (DefaultGroupTimeout): the leader commits
	// for every caller in its batch, so not under its own request's context.
	Timeout time.Duration
}

// NewGroup returns a Group writing through a.
func NewGroup(a *Auditor, opts GroupOptions) *Group {
	if opts.Max <= 0 {
		opts.Max = DefaultGroupMax
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultGroupTimeout
	}
	return &Group{a: a, max: opts.Max, timeout: opts.Timeout}
}

// Record commits e, possibly in one transaction with other callers'
// entries, and returns once it is committed. An error means it was not
// (EInvalid for an entry that is not valid; EUnavailable otherwise): the
// caller fails closed. The entry is encoded (and its people named by
// pseudonym) in the caller's goroutine, before it queues.
func (g *Group) Record(ctx context.Context, e Entry) error {
	row, err := g.a.encode(e, nil)
	if err != nil {
		return err
	}
	w := &groupWaiter{row: row, done: make(chan error, 1), lead: make(chan struct{}, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, w)
	lead := !g.leading
	g.leading = true
	g.mu.Unlock()
	if !lead {
		// No early return on ctx: a caller that left could be handed the
		// lead with no one to take it. The wait is bounded by the commits'
		// timeout instead.
		select {
		case err := <-w.done:
			return err
		case <-w.lead:
		}
	}
	g.leadOnce(ctx)
	return <-w.done
}

// leadOnce commits one batch from the front of the queue (the leader is
// its first entry) and hands the lead on, or gives it up when no one waits.
func (g *Group) leadOnce(ctx context.Context) {
	g.mu.Lock()
	n := min(len(g.queue), g.max)
	batch := make([]*groupWaiter, n)
	copy(batch, g.queue)
	g.queue = append(g.queue[:0:0], g.queue[n:]...)
	g.mu.Unlock()

	// Whatever happens below (a panic included), every caller in the batch
	// gets an answer and the lead passes on: no caller waits forever.
	defer g.handOff()
	defer func() {
		for _, w := range batch {
			select {
			case w.done <- kluis.Unavailable("audit log", errors.New("audit: group commit did not finish")):
			default: // answered already
			}
		}
	}()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.timeout)
	defer cancel()
	if g.beforeCommit != nil {
		g.beforeCommit(len(batch))
	}
	g.commit(cctx, batch)
}

// handOff gives the lead to the first caller waiting, or gives it up.
func (g *Group) handOff() {
	g.mu.Lock()
	if len(g.queue) == 0 {
		g.leading = false
		g.mu.Unlock()
		return
	}
	next := g.queue[0]
	g.mu.Unlock()
	next.lead <- struct{}{}
}

// commit writes batch in one transaction and tells each waiter; if that
// fails, it writes each entry alone, so that each gets its own answer.
func (g *Group) commit(ctx context.Context, batch []*groupWaiter) {
	rows := make([]entryRow, len(batch))
	for i, w := range batch {
		rows[i] = w.row
	}
	err := g.a.db.InTx(ctx, func(tx pgx.Tx) error { return insertRows(ctx, tx, rows) })
	if err == nil || len(batch) == 1 {
		for _, w := range batch {
			w.done <- recordError(err)
		}
		return
	}
	for _, w := range batch {
		err := g.a.db.InTx(ctx, func(tx pgx.Tx) error { return insertRows(ctx, tx, []entryRow{w.row}) })
		w.done <- recordError(err)
	}
}

// recordError is Record's error for a commit that failed: the audit log is
// unavailable (the caller fails closed).
func recordError(err error) error {
	if err == nil || kluis.ErrorCode(err) == kluis.EUnavailable {
		return err
	}
	return kluis.Unavailable("audit log", err)
}

// errNoPseudonym: the pseudonym key is not usable (the key provider has
// not confirmed it within its bound). An entry naming a person is then not
// written at all, rather than written without the name compliance finds
// it by: the caller fails closed (503).
var errNoPseudonym = kluis.Unavailable("audit log", errors.New("audit: the pseudonym key is unavailable"))

// entryRow is an entry as its row's columns.
type entryRow struct {
	actorKind, actor, action, target, outcome string
	subject                                   *string
	requestID                                 string
	details                                   string
}

// encode validates e and turns it into its row, naming people by their
// pseudonyms: subject overrides e.Subject's pseudonym when not nil.
func (a *Auditor) encode(e Entry, subject *string) (entryRow, error) {
	if err := validate(e); err != nil {
		return entryRow{}, err
	}
	if subject == nil && e.Subject != "" {
		p := a.Pseudonym(e.Subject)
		if p == "" {
			return entryRow{}, errNoPseudonym
		}
		subject = &p
	}
	actor := e.Actor
	if e.ActorKind == ActorUser && actor != "" {
		if actor = a.Pseudonym(actor); actor == "" {
			return entryRow{}, errNoPseudonym
		}
	}
	details := e.Details
	if details == nil {
		details = map[string]any{}
	}
	raw, err := json.Marshal(details)
	if err != nil {
		return entryRow{}, fmt.Errorf("audit: encode details: %w", err)
	}
	return entryRow{actorKind: e.ActorKind, actor: actor, action: e.Action, target: e.Target, outcome: e.Outcome,
		subject: subject, requestID: e.RequestID, details: string(raw)}, nil
}

// insertRows inserts rows in tx with one statement, in their order.
// occurred_at is the database's (a trigger sets it, whatever is sent): no
// writer dates an entry.
func insertRows(ctx context.Context, tx pgx.Tx, rows []entryRow) error {
	var err error
	if len(rows) == 1 {
		r := rows[0]
		_, err = tx.Exec(ctx, `
			INSERT INTO audit_entries (actor_kind, actor, action, target, outcome, subject_pseudonym, request_id, details)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			r.actorKind, r.actor, r.action, r.target, r.outcome, r.subject, r.requestID, r.details)
	} else {
		n := len(rows)
		kinds, actors, actions, targets, outcomes := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		subjects, requestIDs, details := make([]*string, n), make([]string, n), make([]string, n)
		for i, r := range rows {
			kinds[i], actors[i], actions[i], targets[i], outcomes[i] = r.actorKind, r.actor, r.action, r.target, r.outcome
			subjects[i], requestIDs[i], details[i] = r.subject, r.requestID, r.details
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO audit_entries (actor_kind, actor, action, target, outcome, subject_pseudonym, request_id, details)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::jsonb[])`,
			kinds, actors, actions, targets, outcomes, subjects, requestIDs, details)
	}
	if err != nil {
		return kluis.Unavailable("audit log", postgres.Translate(err))
	}
	return nil
}
