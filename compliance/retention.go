package compliance

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres"
)

const day = 24 * time.Hour

// MaxRetention bounds every period, so that a typo in a setting cannot keep
// data for ever.
const MaxRetention = 10 * 365 * day

// DefaultPurgeBatch is how many rows one purge transaction deletes, and
// DefaultPurgePause the pause between two: short transactions with room
// between them keep the API's latency while a large backlog is purged
// (docs/BENCHMARKS.md).
const (
	DefaultPurgeBatch = 2000
	DefaultPurgePause = 20 * time.Millisecond
)

// AuditClass is the name of the audit entries' retention class.
const AuditClass = "audit_entries"

// VerificationFailuresClass is the retention class of failed
// verifications' records, which must outlive KLUIS_VERIFICATION_LOCKOUT.
const VerificationFailuresClass = "verification_failures"

// RetentionClass is one kind of record and how long it is kept. Feature
// packages register the classes of their tables (RegisterRetentionClass); a
// class whose table or columns do not exist yet is skipped with a note, so a
// class may be registered before its migration lands.
type RetentionClass struct {
	// Name names the class ("link_sessions"); its setting is
	// KLUIS_RETENTION_<NAME in capitals>.
	Name string
	// Table is the public table the class's rows live in.
	Table string
	// Where selects the rows whose period is over, on the table aliased t;
	// $1 is the cutoff (now minus the period).
	Where string
	// Subject, when the rows belong to a subject, is an expression on t
	// giving the internal subject id, so that held subjects' rows are kept.
	Subject string
	// Requires lists the columns Where and Subject use, checked in the
	// catalog before the class runs.
	Requires []string
	// Default is the period kept when no setting says otherwise; Min is the
	// shortest a setting may ask for.
	Default, Min time.Duration
	// Description says in words what is purged, for documentation and
	// `kluis jobs` output.
	Description string

	audit bool
}

// Setting is the environment variable that sets the class's period.
func (c RetentionClass) Setting() string {
	return "KLUIS_RETENTION_" + strings.ToUpper(c.Name)
}

var registry = struct {
	mu      sync.Mutex
	classes []RetentionClass
}{classes: defaultClasses()}

// defaultClasses are the record classes of the tables kluis has today, in
// the order they are purged: referencing rows before the rows they refer to
// (sessions and events before items, verifications before accounts,
// accounts before items).
func defaultClasses() []RetentionClass {
	return []RetentionClass{
		{
			Name: "hosted_pages", Table: "hosted_pages", Subject: "t.subject_id",
			Where:    `t.expires_at < $1`,
			Requires: []string{"expires_at", "subject_id"},
			Default:  day, Min: time.Hour,
			Description: "openings of hosted link and verification pages, by the time their page token expired (they hold no secret; the page is useless by then)",
		},
		{
			Name: "link_sessions", Table: "link_sessions", Subject: "t.subject_id",
			// A session whose unstored token was never confirmed revoked is
			// kept: it is the erasure's record that access may be live.
			Where: `((t.status IN ('expired', 'exited', 'exchanged') AND t.updated_at < $1)
				OR (t.status IN ('created', 'succeeded') AND t.expires_at < $1)) AND t.revoke_failed_at IS NULL`,
			Requires: []string{"status", "updated_at", "expires_at", "subject_id", "revoke_failed_at"},
			Default:  30 * day, Min: time.Hour,
			Description: "link sessions that ended (expired, exited or exchanged), or that were never finished and are past their deadline",
		},
		{
			Name: "provider_webhook_events", Table: "provider_webhook_events",
			Subject:  "(SELECT i.subject_id FROM items i WHERE i.id = t.item_id)",
			Where:    `t.received_at < $1`,
			Requires: []string{"received_at", "item_id"},
			Default:  90 * day, Min: day,
			Description: "verified provider webhooks, by the time they were received (duplicates are recognised for this long)",
		},
		{
			Name: "verifications", Table: "verifications", Subject: "t.subject_id",
			Where:    `t.status IN ('verified', 'failed', 'expired', 'returned') AND coalesce(t.finished_at, t.updated_at) < $1`,
			Requires: []string{"status", "finished_at", "updated_at", "subject_id"},
			Default:  180 * day, Min: day,
			Description: "finished verifications (verified, failed, expired or returned), by the time they finished",
		},
		{
			Name: VerificationFailuresClass, Table: "verification_failures", Subject: "t.subject_id",
			Where:    `t.failed_at < $1`,
			Requires: []string{"failed_at", "subject_id"},
			Default:  90 * day, Min: day,
			Description: "records of failed verifications, by the time they failed (they lock accounts and numbers for KLUIS_VERIFICATION_LOCKOUT, which this must not be shorter than)",
		},
		{
			Name: "removed_accounts", Table: "accounts", Subject: "t.subject_id",
			Where: `t.removed_at < $1
				OR t.item_id IN (SELECT i.id FROM items i WHERE i.status = 'removed' AND i.removed_at < $1)`,
			Requires: []string{"removed_at", "item_id", "subject_id"},
			Default:  90 * day, Min: time.Hour,
			Description: "accounts that were removed, or whose item was removed, by the time of removal",
		},
		{
			Name: "removed_items", Table: "items", Subject: "t.subject_id",
			Where:    `t.status = 'removed' AND t.removed_at < $1`,
			Requires: []string{"status", "removed_at", "subject_id"},
			Default:  90 * day, Min: time.Hour,
			Description: "removed items (their credential is already destroyed), by the time of removal",
		},
		{
			Name: "revoked_accounts", Table: "accounts", Subject: "t.subject_id",
			Where: `((t.status = 'revoked' AND t.revoked_at < $1)
				OR t.item_id IN (SELECT i.id FROM items i WHERE i.status = 'revoked' AND i.updated_at < $1))
				AND NOT EXISTS (SELECT 1 FROM verifications v WHERE v.account_id = t.id)`,
			Requires: []string{"status", "revoked_at", "item_id", "subject_id"},
			Default:  90 * day, Min: time.Hour,
			Description: "accounts whose owner withdrew consent at the bank (or whose item was revoked), by the time of revocation, once no verification refers to them",
		},
		{
			Name: "revoked_items", Table: "items", Subject: "t.subject_id",
			Where: `t.status = 'revoked' AND t.updated_at < $1
				AND NOT EXISTS (SELECT 1 FROM accounts a WHERE a.item_id = t.id)
				AND NOT EXISTS (SELECT 1 FROM link_sessions l WHERE l.item_id = t.id OR l.exchanged_item_id = t.id)
				AND NOT EXISTS (SELECT 1 FROM provider_webhook_events w WHERE w.item_id = t.id)`,
			Requires: []string{"status", "updated_at", "subject_id"},
			Default:  90 * day, Min: time.Hour,
			Description: "items whose owner withdrew consent at the bank (their token is already destroyed), by the time of revocation (the item's last change), once nothing refers to them",
		},
		{
			Name: "revoked_credentials", Table: "credentials", Subject: "t.subject_id",
			Where: `t.revoked_at < $1
				AND NOT EXISTS (SELECT 1 FROM items i WHERE i.credential_ref = t.ref OR i.pending_credential_ref = t.ref)
				AND NOT EXISTS (SELECT 1 FROM accounts a WHERE a.account_number_ref = t.ref OR a.holder_id_ref = t.ref)`,
			Requires: []string{"revoked_at", "ref", "subject_id"},
			Default:  90 * day, Min: time.Hour,
			Description: "tombstones of revoked credentials (the secret is long destroyed; the ref answers 410 until then and 404 after), once no item or account refers to them",
		},
		{
			Name: "outbox_events", Table: "outbox",
			Where: `t.fanned_out AND t.created_at < $1
				AND NOT EXISTS (SELECT 1 FROM outbox_targets o WHERE o.event_id = t.id AND o.status = 'pending')`,
			Requires: []string{"fanned_out", "created_at", "id"},
			Default:  30 * day, Min: day,
			Description: "events for client apps whose every delivery is over (delivered or given up), with their delivery records",
		},
		{
			Name: "idempotency_keys", Table: "idempotency_keys",
			Where:    `t.expires_at < $1`,
			Requires: []string{"expires_at"},
			Default:  day, Min: time.Hour,
			Description: "idempotency keys, this long after they expired (they are kept at least KLUIS_IDEMPOTENCY_TTL)",
		},
		{
			Name: "job_runs", Table: "job_runs",
			Where:    `t.finished_at < $1`,
			Requires: []string{"finished_at"},
			Default:  90 * day, Min: day,
			Description: "records of scheduled job runs, by the time they finished (the audit chain keeps an entry per run)",
		},
		{
			Name: AuditClass, Table: "audit_entries",
			Default: 400 * day, Min: audit.MinRetention, audit: true,
			Description: "audit entries and their chain links, oldest first, behind a checkpoint that keeps the rest verifiable",
		},
	}
}

// RegisterRetentionClass adds a class (a feature's table). The audit class
// stays last. Registering a name twice is an error.
func RegisterRetentionClass(c RetentionClass) error {
	if c.Name == "" || c.Table == "" || c.Where == "" || c.Default <= 0 || c.Min <= 0 || c.Default < c.Min {
		return fmt.Errorf("retention class %q: name, table, where and a default of at least min are required", c.Name)
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	for _, have := range registry.classes {
		if have.Name == c.Name {
			return fmt.Errorf("retention class %q is registered already", c.Name)
		}
	}
	n := len(registry.classes)
	registry.classes = append(registry.classes[:n-1:n-1], c, registry.classes[n-1])
	return nil
}

// RetentionClasses returns the registered classes in purge order.
func RetentionClasses() []RetentionClass {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	return append([]RetentionClass(nil), registry.classes...)
}

// PurgeOptions tunes one purge.
type PurgeOptions struct {
	// DryRun counts what would be deleted and deletes nothing.
	DryRun bool
	// Batch is how many rows one transaction deletes (DefaultPurgeBatch
	// when 0).
	Batch int
	// Pause is slept between batches, to leave the database to the API.
	Pause time.Duration
	// Progress, if set, is told each class's running count after each batch.
	Progress func(class string, deleted int64)
}

// ClassReport is what a purge did, or would do, for one class.
type ClassReport struct {
	Class  string        `json:"class"`
	Table  string        `json:"table"`
	Period time.Duration `json:"period"`
	Cutoff time.Time     `json:"cutoff"`
	// Deleted is the number of rows deleted, or that a dry run would delete.
	Deleted int64 `json:"deleted"`
	Batches int   `json:"batches"`
	// Skipped says why the class did not run (its table does not exist yet).
	Skipped string `json:"skipped,omitempty"`
}

// PurgeReport is a whole purge, class by class.
type PurgeReport struct {
	DryRun  bool          `json:"dry_run"`
	Classes []ClassReport `json:"classes"`
}

// Purger deletes records past their retention period, in bounded batches,
// each batch its own short transaction, never touching a held subject's rows
// and never a row another row still refers to.
type Purger struct {
	db      *postgres.DB
	auditor *audit.Auditor
	clock   kluis.Clock
	periods map[string]time.Duration
	classes []RetentionClass
}

// NewPurger returns a purger over the registered classes. periods sets the
// period per class name; classes not in it keep their default, and a period
// shorter than the class's minimum is raised to it (fail safe). clock may
// be nil for the wall clock.
func NewPurger(db *postgres.DB, auditor *audit.Auditor, clock kluis.Clock, periods map[string]time.Duration) *Purger {
	if clock == nil {
		clock = kluis.SystemClock{}
	}
	return &Purger{db: db, auditor: auditor, clock: clock, periods: periods, classes: RetentionClasses()}
}

// Period is the period the purger keeps the class for.
func (p *Purger) Period(c RetentionClass) time.Duration {
	d, ok := p.periods[c.Name]
	if !ok {
		d = c.Default
	}
	return max(d, c.Min)
}

// Purge runs every class in order. A class that fails stops the purge: its
// error is returned with the report so far (what was deleted stays deleted).
func (p *Purger) Purge(ctx context.Context, opts PurgeOptions) (PurgeReport, error) {
	if opts.Batch <= 0 {
		opts.Batch = DefaultPurgeBatch
	}
	rep := PurgeReport{DryRun: opts.DryRun}
	cat, err := loadCatalog(ctx, p.db.Pool)
	if err != nil {
		return rep, fmt.Errorf("retention: %w", postgres.Translate(err))
	}
	now := p.clock.Now().UTC()
	for _, c := range p.classes {
		period := p.Period(c)
		cr := ClassReport{Class: c.Name, Table: c.Table, Period: period, Cutoff: now.Add(-period)}
		switch {
		case !cat.has(c.Table):
			cr.Skipped = "table " + c.Table + " does not exist yet"
		case !cat.has(c.Table, c.Requires...):
			cr.Skipped = "table " + c.Table + " lacks a column the class needs"
		case c.audit:
			err = p.purgeAudit(ctx, &cr, opts)
		default:
			err = p.purgeClass(ctx, cat, c, &cr, opts)
		}
		rep.Classes = append(rep.Classes, cr)
		if err != nil {
			return rep, fmt.Errorf("retention: %s: %w", c.Name, err)
		}
		if cr.Skipped == "" {
			if err := p.record(ctx, cr, opts.DryRun); err != nil {
				return rep, err
			}
		}
	}
	return rep, nil
}

// selectSQL builds the query for the class's purgeable rows.
func selectSQL(cat *catalog, c RetentionClass) string {
	conds := []string{"(" + c.Where + ")"}
	if c.Subject != "" {
		conds = append(conds, `NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.lifted_at IS NULL AND h.held_subject_id = (`+c.Subject+`))`)
	}
	if refs := cat.blockingReferences(c.Table); refs != "" {
		conds = append(conds, refs)
	}
	return fmt.Sprintf(`FROM %s t WHERE %s`, quoteIdent(c.Table), strings.Join(conds, " AND "))
}

func (p *Purger) purgeClass(ctx context.Context, cat *catalog, c RetentionClass, cr *ClassReport, opts PurgeOptions) error {
	from := selectSQL(cat, c)
	if opts.DryRun {
		err := p.db.Pool.QueryRow(ctx, `SELECT count(*) `+from, cr.Cutoff).Scan(&cr.Deleted)
		return postgres.Translate(err)
	}
	// ctid picks the rows without needing to know the table's key; a row
	// changed between the pick and the delete has a new ctid and is left.
	del := fmt.Sprintf(`DELETE FROM %s WHERE ctid IN (SELECT t.ctid %s LIMIT $2)`, quoteIdent(c.Table), from)
	for {
		var n int64
		err := p.db.InTx(ctx, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, del, cr.Cutoff, opts.Batch)
			n = tag.RowsAffected()
			return err
		})
		if err != nil {
			return err
		}
		cr.Deleted += n
		cr.Batches++
		if opts.Progress != nil {
			opts.Progress(c.Name, cr.Deleted)
		}
		if n < int64(opts.Batch) {
			return nil
		}
		if err := kluis.Sleep(ctx, opts.Pause); err != nil {
			return err
		}
	}
}

// record writes the class's count to the audit chain.
func (p *Purger) record(ctx context.Context, cr ClassReport, dry bool) error {
	return p.auditor.Record(ctx, audit.Entry{
		ActorKind: audit.ActorSystem, Actor: "retention", Action: "retention.purged", Target: cr.Class, Outcome: audit.OutcomeSuccess,
		Details: map[string]any{"deleted": cr.Deleted, "dry_run": dry, "cutoff": cr.Cutoff.Format(time.RFC3339), "batches": cr.Batches},
	})
}

// purgeStop is the first chain position that retention must keep: the first
// link whose entry is younger than the cutoff, or names a held subject (by
// pseudonym, as subject or acting user). The chain can only lose its head,
// so everything after it stays too. Zero means no such link.
const purgeStop = `
	SELECT coalesce(min(c.pos), 0) AS stop_pos FROM audit_chain c JOIN audit_entries e ON e.seq = c.entry_seq
	WHERE e.occurred_at >= $1
	   OR e.subject_pseudonym IN (SELECT subject_pseudonym FROM legal_holds WHERE lifted_at IS NULL)
	   OR (e.actor_kind = 'user' AND e.actor IN (SELECT subject_pseudonym FROM legal_holds WHERE lifted_at IS NULL))`

// purgeAudit deletes the oldest audit entries and their links in batches.
// Each batch, in its own transaction, writes a checkpoint with the position
// and hash of the last link it deletes, then deletes the links and entries
// (all in audit_purge), and an audit entry saying so: audit.Verify starts from the
// newest checkpoint. The cutoff is the database's clock minus the period.
func (p *Purger) purgeAudit(ctx context.Context, cr *ClassReport, opts PurgeOptions) error {
	if opts.DryRun {
		err := p.db.Pool.QueryRow(ctx, `
			WITH stop AS (`+purgeStop+`)
			SELECT count(*) FROM audit_chain c, stop WHERE stop.stop_pos = 0 OR c.pos < stop.stop_pos`, cr.Cutoff).Scan(&cr.Deleted)
		return postgres.Translate(err)
	}
	for {
		var n int64
		err := p.db.InTx(ctx, func(tx pgx.Tx) error {
			var err error
			n, err = p.auditBatch(ctx, tx, cr.Period, opts.Batch)
			return err
		})
		if err != nil {
			return err
		}
		cr.Deleted += n
		if n > 0 {
			cr.Batches++
		}
		if opts.Progress != nil {
			opts.Progress(cr.Class, cr.Deleted)
		}
		if n < int64(opts.Batch) {
			return nil
		}
		if err := kluis.Sleep(ctx, opts.Pause); err != nil {
			return err
		}
	}
}

// auditBatch purges one batch in the database: audit_purge (a SECURITY
// DEFINER function of 00008_audit_append_only.sql) decides what may go
// (links older than the period, never under 365 days, up to the first that
// is younger or names a held subject), writes the checkpoint with the count
// and deletes links and entries; the serving role can delete neither itself.
// The audit entry saying so is written in the same transaction.
func (p *Purger) auditBatch(ctx context.Context, tx pgx.Tx, period time.Duration, batch int) (int64, error) {
	var n int64
	var from, to *int64
	err := tx.QueryRow(ctx, `SELECT entries, from_pos, to_pos FROM public.audit_purge(make_interval(secs => $1), $2)`,
		period.Seconds(), batch).Scan(&n, &from, &to)
	if err != nil || n == 0 {
		return 0, err
	}
	err = p.auditor.Append(ctx, tx, audit.Entry{
		ActorKind: audit.ActorSystem, Actor: "retention", Action: "audit.purged", Target: fmt.Sprintf("pos:%d", *to),
		Outcome: audit.OutcomeSuccess, Details: map[string]any{"from_pos": *from, "to_pos": *to, "entries": n},
	})
	return n, err
}

// Describe lists the classes with their periods, sorted by name, for
// documentation and operators.
func (p *Purger) Describe() []ClassReport {
	out := make([]ClassReport, 0, len(p.classes))
	for _, c := range p.classes {
		out = append(out, ClassReport{Class: c.Name, Table: c.Table, Period: p.Period(c)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Class < out[j].Class })
	return out
}
