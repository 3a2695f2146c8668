package compliance

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/postgres"
)

// The catalog walk below is the one place kluis's SQL reaches every
// feature's tables, by design: erasure, export and retention's
// blocking-reference guards find the tables in Postgres's catalog and name
// none, so that a new feature's table is covered the day it is created.
// Everywhere else a table is named only by the package that owns it
// (migrations/owners_test.go).

// SubjectColumn is the column that makes a table's rows belong to a data
// subject: every table in the public schema with a column of this name holds
// the internal subject id (subjects.id) there, and erasure and export find
// such tables in the catalog rather than in a list, so that a new feature
// table is covered the day it is created. Tables whose rows must outlive the
// subject (legal holds, erasure requests) name the column otherwise.
const SubjectColumn = "subject_id"

// fkey is one foreign key as the catalog describes it.
type fkey struct {
	child, parent   string
	childCols       []string
	parentCols      []string
	onDeleteBlocked bool // NO ACTION or RESTRICT: referencing rows must go first
}

// catalog is the part of the schema erasure, export and retention look at.
type catalog struct {
	columns map[string]map[string]string // table → column → type
	fkeys   []fkey
}

// loadCatalog reads the public schema's ordinary and partitioned tables
// (partitions are reached through their parent), their columns and their
// foreign keys.
func loadCatalog(ctx context.Context, q postgres.Querier) (*catalog, error) {
	c := &catalog{columns: map[string]map[string]string{}}
	rows, err := q.Query(ctx, `
		SELECT cl.relname, a.attname, format_type(a.atttypid, a.atttypmod)
		FROM pg_class cl
		JOIN pg_namespace n ON n.oid = cl.relnamespace
		JOIN pg_attribute a ON a.attrelid = cl.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE n.nspname = 'public' AND cl.relkind IN ('r', 'p') AND NOT cl.relispartition`)
	if err != nil {
		return nil, fmt.Errorf("catalog: columns: %w", err)
	}
	for rows.Next() {
		var table, col, typ string
		if err := rows.Scan(&table, &col, &typ); err != nil {
			rows.Close()
			return nil, fmt.Errorf("catalog: columns: %w", err)
		}
		if c.columns[table] == nil {
			c.columns[table] = map[string]string{}
		}
		c.columns[table][col] = typ
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: columns: %w", err)
	}
	rows, err = q.Query(ctx, `
		SELECT ch.relname, pa.relname, con.confdeltype::text IN ('a', 'r'),
		       array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
		             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
		       array(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
		             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i)
		FROM pg_constraint con
		JOIN pg_class ch ON ch.oid = con.conrelid
		JOIN pg_class pa ON pa.oid = con.confrelid
		JOIN pg_namespace n ON n.oid = ch.relnamespace
		JOIN pg_namespace pn ON pn.oid = pa.relnamespace
		WHERE con.contype = 'f' AND n.nspname = 'public' AND pn.nspname = 'public' AND NOT ch.relispartition
		ORDER BY ch.relname, con.conname`)
	if err != nil {
		return nil, fmt.Errorf("catalog: foreign keys: %w", err)
	}
	c.fkeys, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (fkey, error) {
		var f fkey
		err := r.Scan(&f.child, &f.parent, &f.onDeleteBlocked, &f.childCols, &f.parentCols)
		return f, err
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: foreign keys: %w", err)
	}
	return c, nil
}

func (c *catalog) has(table string, cols ...string) bool {
	t, ok := c.columns[table]
	if !ok {
		return false
	}
	for _, col := range cols {
		if _, ok := t[col]; !ok {
			return false
		}
	}
	return true
}

// subjectTables lists the tables with a subject_id column, sorted.
func (c *catalog) subjectTables() []string {
	var out []string
	for t, cols := range c.columns {
		if _, ok := cols[SubjectColumn]; ok {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// planStep is one table of an erasure or export: its rows that belong to the
// subject are those matching where, in which $1 is the internal subject id.
type planStep struct {
	Table string
	Where string
}

// subjectPlan lists every table holding rows of one subject, in an order
// that deletes referencing rows before the rows they refer to, with subjects
// last. A table belongs in the plan if it has a subject_id column, or if it
// has no such column but a foreign key that would block deleting planned
// rows (say, webhook events naming an item): those rows are about the
// subject's objects and go with them. Foreign keys that cascade or set null
// are left to Postgres.
func (c *catalog) subjectPlan() ([]planStep, error) {
	where := map[string]string{"subjects": "id = $1"}
	for _, t := range c.subjectTables() {
		where[t] = quoteIdent(SubjectColumn) + " = $1"
	}
	// Dependents: tables that refer to planned rows with blocking keys.
	// Each round adds tables one reference further away; their predicate is
	// built from the parents' predicates, so parents must be settled first.
	for round := 0; round < 8; round++ {
		added := false
		deps := map[string][]string{}
		for _, f := range c.fkeys {
			if !f.onDeleteBlocked || f.child == f.parent {
				continue
			}
			if _, planned := where[f.child]; planned {
				continue
			}
			pw, ok := where[f.parent]
			if !ok {
				continue
			}
			deps[f.child] = append(deps[f.child], fmt.Sprintf("(%s) IN (SELECT %s FROM %s WHERE %s)",
				quoteList(f.childCols), quoteList(f.parentCols), quoteIdent(f.parent), pw))
		}
		for t, preds := range deps {
			sort.Strings(preds)
			where[t] = strings.Join(preds, " OR ")
			added = true
		}
		if !added {
			break
		}
	}
	return c.order(where)
}

// order sorts the planned tables so that a table comes before every table it
// refers to with a blocking key (Kahn's algorithm, ties by name so the order
// is stable). A cycle is an error naming its tables: a schema that needs one
// must make a key deferrable or cascading, and erasure must be told.
func (c *catalog) order(where map[string]string) ([]planStep, error) {
	before := map[string]map[string]bool{} // parent → children that must go first
	indeg := map[string]int{}
	for t := range where {
		indeg[t] = 0
	}
	for _, f := range c.fkeys {
		_, okc := where[f.child]
		_, okp := where[f.parent]
		if !okc || !okp || !f.onDeleteBlocked || f.child == f.parent {
			continue
		}
		if before[f.child] == nil {
			before[f.child] = map[string]bool{}
		}
		if !before[f.child][f.parent] {
			before[f.child][f.parent] = true
			indeg[f.parent]++
		}
	}
	var out []planStep
	for len(indeg) > 0 {
		var ready []string
		for t, n := range indeg {
			if n == 0 {
				ready = append(ready, t)
			}
		}
		if len(ready) == 0 {
			var left []string
			for t := range indeg {
				left = append(left, t)
			}
			sort.Strings(left)
			return nil, fmt.Errorf("catalog: foreign keys form a cycle among %s", strings.Join(left, ", "))
		}
		sort.Strings(ready)
		for _, t := range ready {
			out = append(out, planStep{Table: t, Where: where[t]})
			delete(indeg, t)
			for p := range before[t] {
				indeg[p]--
			}
		}
	}
	// subjects has no outgoing keys into the plan and everything refers to
	// it, so it sorts last; make that explicit rather than incidental.
	for i, s := range out {
		if s.Table == "subjects" && i != len(out)-1 {
			out = append(append(out[:i:i], out[i+1:]...), s)
			break
		}
	}
	return out, nil
}

// blockingReferences returns a predicate on alias t that is true when no row
// elsewhere still refers to t's row through a blocking foreign key, so that
// retention can pass over such rows instead of failing on them.
func (c *catalog) blockingReferences(table string) string {
	var preds []string
	for _, f := range c.fkeys {
		if f.parent != table || !f.onDeleteBlocked {
			continue
		}
		var on []string
		for i := range f.childCols {
			on = append(on, fmt.Sprintf("r.%s = t.%s", quoteIdent(f.childCols[i]), quoteIdent(f.parentCols[i])))
		}
		preds = append(preds, fmt.Sprintf("NOT EXISTS (SELECT 1 FROM %s r WHERE %s)", quoteIdent(f.child), strings.Join(on, " AND ")))
	}
	sort.Strings(preds)
	return strings.Join(preds, " AND ")
}

// secretName matches column names that hold secrets or their stand-ins
// (hashes, MACs, envelopes) when their type could carry them.
var secretName = regexp.MustCompile(`(^|_)(secret|password|passphrase|envelope|wrapped|token|mac|hash|sealed|key)(_|$)`)

// withheld lists the columns of table that export leaves out: every bytea
// column (ciphertext, hashes, HMACs: nothing a person can read, and nothing
// that should leave kluis), and text or JSON columns whose name says secret.
func (c *catalog) withheld(table string) []string {
	out := []string{} // never nil: it is a query argument, and NULL would blank every row
	for col, typ := range c.columns[table] {
		textual := typ == "text" || strings.HasPrefix(typ, "character") || typ == "json" || typ == "jsonb"
		if typ == "bytea" || (textual && secretName.MatchString(col)) {
			out = append(out, col)
		}
	}
	sort.Strings(out)
	return out
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

func quoteList(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = quoteIdent(c)
	}
	return strings.Join(q, ", ")
}

// ErasurePlan lists, in the order erasure deletes from them, the tables that
// hold a subject's rows, as the catalog shows them now: for operators and
// tests, so that a new table's place can be checked.
func ErasurePlan(ctx context.Context, db *postgres.DB) ([]string, error) {
	cat, err := loadCatalog(ctx, db.Pool)
	if err != nil {
		return nil, err
	}
	plan, err := cat.subjectPlan()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(plan))
	for i, s := range plan {
		out[i] = s.Table
	}
	return out, nil
}
