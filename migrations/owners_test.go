package migrations_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// tableOwners names, for every table the migrations create, the one package
// (its directory in the repository) whose SQL may name it: other packages
// read and change it through that package's functions, which take the
// caller's transaction where a lock or a conditional update must stay in it.
// A subpackage counts as its owner's (banklink/store.go and a provider's
// sandbox alike). A migration that creates a table adds it here.
var tableOwners = map[string]string{
	"audit_entries":     "audit",
	"audit_chain":       "audit",
	"audit_pending":     "audit",
	"audit_checkpoints": "audit",
	"job_runs":          "jobs",

	"subjects":                   "vault",
	"credentials":                "vault",
	"keystore.subject_keys":      "vault",
	"keystore.system_keys":       "vault",
	"keystore.keyring_keys":      "vault",
	"keystore.rotation_failures": "vault",

	"link_sessions":           "banklink",
	"items":                   "banklink",
	"accounts":                "banklink",
	"provider_webhook_events": "banklink",
	"sandbox_items":           "banklink",
	"sandbox_public_tokens":   "banklink",

	"idempotency_keys": "api/idempotency",

	"verifications":         "verification",
	"verification_failures": "verification",
	"sandbox_rail_deposits": "verification",

	"outbox":            "events",
	"outbox_targets":    "events",
	"outbox_deliveries": "events",

	"legal_holds":      "compliance",
	"erasure_requests": "compliance",

	"hosted_pages": "hosted",
}

// knownStrangers are the places that still name another package's table,
// each with the work that removes it. The catalog-driven erasure and export
// (compliance/catalog.go, workflow.go) are no exception: they walk every
// table with a subject_id column by design and name none.
var knownStrangers = map[string]string{}

// sqlTable finds the tables a SQL text names: after FROM, JOIN, INTO,
// UPDATE or TABLE, in kluis's style of upper-case keywords (so that prose
// in an error message is not read as SQL).
var sqlTable = regexp.MustCompile(`\b(?:FROM|JOIN|INTO|UPDATE|TABLE)\s+(?:ONLY\s+)?((?:public\.|keystore\.)?[a-z_][a-z0-9_]*)`)

// createTable finds the tables a migration creates.
var createTable = regexp.MustCompile(`(?i)CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?((?:public\.|keystore\.)?[a-z_][a-z0-9_]*)`)

// TestEveryTableHasAnOwner fails when a migration creates a table that
// tableOwners does not name, and when it names one no migration creates.
func TestEveryTableHasAnOwner(t *testing.T) {
	created := map[string]bool{}
	files, err := filepath.Glob("*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations (%v)", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range createTable.FindAllStringSubmatch(string(b), -1) {
			created[strings.TrimPrefix(m[1], "public.")] = true
		}
	}
	for table := range created {
		if _, ok := tableOwners[table]; !ok {
			t.Errorf("table %s has no owner in tableOwners", table)
		}
	}
	for table := range tableOwners {
		if !created[table] {
			t.Errorf("tableOwners names %s, which no migration creates", table)
		}
	}
}

// TestNoPackageNamesAnotherPackagesTable reads every non-test Go file of
// kluis (test helpers such as pgtest and apitest are test code too) and
// fails when a string in it names, as SQL, a table its package does not
// own. This is issue 12's "no SQL names another package's tables".
func TestNoPackageNamesAnotherPackagesTable(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	strangers := map[string][]string{} // "pkg table" → where
	err = walkGo(root, func(rel, path string) {
		pkg := filepath.ToSlash(filepath.Dir(rel))
		for _, table := range namedTables(t, path) {
			owner, ok := tableOwners[table]
			if !ok || pkg == owner || strings.HasPrefix(pkg, owner+"/") {
				continue
			}
			key := pkg + " " + table
			strangers[key] = append(strangers[key], rel)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(strangers))
	for k := range strangers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, known := knownStrangers[k]; known {
			continue
		}
		pkg, table, _ := strings.Cut(k, " ")
		t.Errorf("%s names %s's table %s in SQL (%s): ask %s through a function instead",
			pkg, tableOwners[table], table, strings.Join(slices.Compact(strangers[k]), ", "), tableOwners[table])
	}
	for k, who := range knownStrangers {
		if _, still := strangers[k]; !still {
			t.Errorf("known exception %q (%s) no longer occurs: remove it from knownStrangers", k, who)
		}
	}
}

// TestNoPackageExportsSQL fails when a package hands SQL text that names
// one of its tables to other packages: an exported function returning a
// string, or an exported constant or variable, whose string literals name
// a table as SQL. TestNoPackageNamesAnotherPackagesTable reads literals
// where they are written, so SQL built by the owner and placed by a
// caller (vault.SubjectInAppSQL, gone with migration 00029) would pass
// it; the caller's query would still name the owner's table. An owner
// answers through functions that run the query, never by lending its SQL.
func TestNoPackageExportsSQL(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	err = walkGo(root, func(rel, path string) {
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("parse %s: %v", path, err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Name.IsExported() && returnsString(d.Type) && d.Body != nil {
					if tables := returnedSQL(d.Body); len(tables) > 0 {
						t.Errorf("%s: %s returns SQL naming %v: run the query in its package instead", rel, d.Name.Name, tables)
					}
				}
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					vs, ok := spec.(*ast.ValueSpec)
					if !ok {
						continue
					}
					for i, name := range vs.Names {
						if name.IsExported() && i < len(vs.Values) {
							if tables := sqlTablesIn(vs.Values[i]); len(tables) > 0 {
								t.Errorf("%s: %s holds SQL naming %v: run the query in its package instead", rel, name.Name, tables)
							}
						}
					}
				}
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// walkGo calls fn for every non-test Go file of kluis below root, skipping
// what TestNoPackageNamesAnotherPackagesTable skips.
func walkGo(root string, fn func(rel, path string)) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			name := d.Name()
			if rel != "." && (strings.HasPrefix(name, ".") || name == "node_modules" || name == "testdata" ||
				name == "tools" || name == "client" || strings.HasSuffix(name, "test")) {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			fn(rel, path)
		}
		return nil
	})
}

// returnsString says whether a function's results include a string.
func returnsString(ft *ast.FuncType) bool {
	if ft.Results == nil {
		return false
	}
	for _, r := range ft.Results.List {
		if id, ok := r.Type.(*ast.Ident); ok && id.Name == "string" {
			return true
		}
	}
	return false
}

// runsSQL are the methods (of pgx and postgres.Querier) whose SQL argument
// is run, not handed on.
var runsSQL = map[string]bool{"Exec": true, "Query": true, "QueryRow": true, "Queue": true}

// returnedSQL returns the tables that SQL in the return statements of body
// names: text the function hands back, not the queries it runs (a
// return of q.QueryRow(…).Scan(…) runs its SQL; so does a closure's).
func returnedSQL(body *ast.BlockStmt) []string {
	var out []string
	ast.Inspect(body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncLit:
			return false
		case *ast.ReturnStmt:
			for _, r := range n.Results {
				out = append(out, sqlTablesIn(r)...)
			}
			return false
		}
		return true
	})
	return out
}

// sqlTablesIn returns the tables of tableOwners that the string literals
// under n name as SQL, leaving out the SQL that n runs (runsSQL).
func sqlTablesIn(n ast.Node) []string {
	var out []string
	for _, table := range literalTables(n, true) {
		if _, owned := tableOwners[table]; owned {
			out = append(out, table)
		}
	}
	return out
}

// namedTables returns the tables the string literals of a Go file name as
// SQL.
func namedTables(t *testing.T, path string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return literalTables(f, false)
}

// literalTables returns the tables the string literals under n name as
// SQL; with skipRuns, not those in the SQL argument of a call that runs it.
func literalTables(n ast.Node, skipRuns bool) []string {
	var out []string
	ast.Inspect(n, func(n ast.Node) bool {
		if call, ok := n.(*ast.CallExpr); ok && skipRuns {
			if sel, ok := call.Fun.(*ast.SelectorExpr); ok && runsSQL[sel.Sel.Name] {
				return false
			}
		}
		lit, ok := n.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return true
		}
		s, err := strconv.Unquote(lit.Value)
		if err != nil {
			return true
		}
		for _, m := range sqlTable.FindAllStringSubmatch(s, -1) {
			out = append(out, strings.TrimPrefix(m[1], "public."))
		}
		return true
	})
	return out
}
