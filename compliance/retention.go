package compliance

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/retention"
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

// AuditClass is the name of the audit entries' retention class: compliance's
// own, because what may go depends on the legal holds.
const AuditClass = "audit_entries"

// VerificationFailuresClass is the retention class of failed
// verifications' records, which must outlive KLUIS_VERIFICATION_LOCKOUT:
// the name verification registers (verification.FailuresRetentionClass).
const VerificationFailuresClass = "verification_failures"

// RetentionClass is one kind of record and how long it is kept: the type
// feature packages export their classes in (retention.Class).
type RetentionClass = retention.Class

// Registry is the retention classes a Purger runs, in purge order:
// referencing rows before the rows they refer to (sessions and events
// before items, verifications before accounts, accounts before items), and
// the audit entries last. Features export their classes; cmd/kluis gathers
// them (config.RetentionClasses) into one Registry, explicitly.
type Registry struct {
	classes []RetentionClass
}

// NewRegistry checks the features' classes and returns them, in the order
// given, followed by the audit class. A class without a name, table,
// condition or a default of at least its minimum is an error, and so is a
// name given twice (the audit class's included): each name is a setting
// (KLUIS_RETENTION_<NAME>), a metric and an audit target.
func NewRegistry(classes ...RetentionClass) (*Registry, error) {
	r := &Registry{}
	seen := map[string]bool{AuditClass: true}
	for _, c := range classes {
		if c.Name == "" || c.Table == "" || c.Where == "" || c.Default <= 0 || c.Min <= 0 || c.Default < c.Min {
			return nil, fmt.Errorf("retention class %q: name, table, where and a default of at least min are required", c.Name)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("retention class %q is registered twice", c.Name)
		}
		seen[c.Name] = true
		r.classes = append(r.classes, c)
	}
	r.classes = append(r.classes, auditRetentionClass())
	return r, nil
}

// auditRetentionClass is the audit entries' class. It has no condition of
// its own: the audit package's purge decides what may go.
func auditRetentionClass() RetentionClass {
	return RetentionClass{
		Name: AuditClass, Table: "audit_entries",
		Default: 400 * day, Min: audit.MinRetention,
		Description: "audit entries and their chain links, oldest first, behind a checkpoint that keeps the rest verifiable",
	}
}

// Classes returns the registered classes in purge order.
func (r *Registry) Classes() []RetentionClass {
	return append([]RetentionClass(nil), r.classes...)
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

// NewPurger returns a purger over the registry's classes. periods sets the
// period per class name; classes not in it keep their default, and a period
// shorter than the class's minimum is raised to it (fail safe). clock may
// be nil for the wall clock.
func NewPurger(db *postgres.DB, auditor *audit.Auditor, clock kluis.Clock, periods map[string]time.Duration, classes *Registry) *Purger {
	if clock == nil {
		clock = kluis.SystemClock{}
	}
	return &Purger{db: db, auditor: auditor, clock: clock, periods: periods, classes: classes.Classes()}
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
		case c.Name == AuditClass: // NewRegistry keeps the name for compliance's own class
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

// selectSQL builds the query for the class's purgeable rows: the feature's
// condition, and what every class shares: a held subject's rows stay, and
// so does a row another still refers to by a blocking foreign key (found in
// the catalog, as erasure finds its tables, so a feature's condition names
// its own tables only).
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

// purgeAudit deletes the oldest audit entries and their links in batches.
// Each batch, in its own transaction, writes a checkpoint with the position
// and hash of the last link it deletes, then deletes the links and entries
// (audit.PurgeBatch), and an audit entry saying so: audit.Verify starts from the
// newest checkpoint. The cutoff is the database's clock minus the period.
// A dry run counts what would go: the links before the first that is
// younger than the cutoff or names a held subject.
func (p *Purger) purgeAudit(ctx context.Context, cr *ClassReport, opts PurgeOptions) error {
	if opts.DryRun {
		held, err := heldPseudonyms(ctx, p.db.Pool)
		if err != nil {
			return err
		}
		cr.Deleted, err = audit.Purgeable(ctx, p.db.Pool, cr.Cutoff, held)
		return err
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

// heldPseudonyms lists the pseudonyms of the subjects under a hold that is
// not lifted: their audit entries, and every entry after them, stay.
func heldPseudonyms(ctx context.Context, q postgres.Querier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT subject_pseudonym FROM legal_holds WHERE lifted_at IS NULL`)
	if err != nil {
		return nil, fmt.Errorf("compliance: legal holds: %w", postgres.Translate(err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("compliance: legal holds: %w", postgres.Translate(err))
	}
	return out, nil
}

// auditBatch purges one batch (audit.PurgeBatch) and writes the audit entry
// saying so in the same transaction.
func (p *Purger) auditBatch(ctx context.Context, tx pgx.Tx, period time.Duration, batch int) (int64, error) {
	n, from, to, err := audit.PurgeBatch(ctx, tx, period, batch)
	if err != nil || n == 0 {
		return 0, err
	}
	err = p.auditor.Append(ctx, tx, audit.Entry{
		ActorKind: audit.ActorSystem, Actor: "retention", Action: "audit.purged", Target: fmt.Sprintf("pos:%d", to),
		Outcome: audit.OutcomeSuccess, Details: map[string]any{"from_pos": from, "to_pos": to, "entries": n},
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
