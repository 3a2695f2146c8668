package migrations

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Schemas are the schemas kluis's objects live in. Every table in them must
// have an entry in ServingGrants (a test checks it), so that a new table
// cannot be forgotten: it either gets the privileges serving needs or is
// declared as needing none.
var Schemas = []string{"public", "keystore"}

// Grant is what the serving role may do with one object. Privileges empty
// means nothing at all: the object is declared, and serving has no access.
type Grant struct {
	// Kind is TABLE or FUNCTION.
	Kind string
	// Object is the schema-qualified name; a function's includes its
	// argument types, as in GRANT … ON FUNCTION.
	Object     string
	Privileges []string
}

// Privilege sets, named for what the serving role does with the table.
var (
	readOnly  = []string{"SELECT"}
	appendTo  = []string{"SELECT", "INSERT"}
	noDelete  = []string{"SELECT", "INSERT", "UPDATE"}
	readWrite = []string{"SELECT", "INSERT", "UPDATE", "DELETE"}
	none      []string
)

// ServingGrants is everything the serving role (KLUIS_DATABASE_URL) may do,
// in one place: `kluis migrate` revokes whatever else the role holds on
// kluis's objects and grants exactly this. No TRUNCATE, REFERENCES or
// TRIGGER anywhere, and no UPDATE or DELETE on any audit table: the audit
// log is append-only for serving (docs/SECURITY.md), and sealing and its
// retention purge run in the SECURITY DEFINER functions of
// 00008_audit_append_only.sql.
//
// A feature that adds a table adds its line here in the same change.
var ServingGrants = []Grant{
	// The audit log: append entries, read the chain; the rest is the
	// functions'.
	{"TABLE", "public.audit_entries", appendTo},
	{"TABLE", "public.audit_chain", readOnly},
	{"TABLE", "public.audit_pending", readOnly},
	{"TABLE", "public.audit_checkpoints", readOnly},
	{"FUNCTION", "public.audit_seal(integer)", []string{"EXECUTE"}},
	{"FUNCTION", "public.audit_purge(interval, integer)", []string{"EXECUTE"}},
	{"FUNCTION", "public.audit_enqueue()", none},
	// `kluis serve` refuses a schema with pending migrations: it reads
	// goose's record, and never writes it.
	{"TABLE", "public.goose_db_version", readOnly},
	// Scheduled jobs record their runs; retention purges old records.
	{"TABLE", "public.job_runs", readWrite},
	// The vault: subjects are created and erased; keys are created,
	// rewrapped and (erasure) destroyed.
	{"TABLE", "public.subjects", readWrite}, // ON CONFLICT … DO UPDATE needs UPDATE
	{"TABLE", "public.credentials", readWrite},
	{"TABLE", "keystore.subject_keys", readWrite},
	{"TABLE", "keystore.system_keys", noDelete},
	// Keyring keys: the first epoch is created on first start, new epochs
	// and root rewraps by the rotation job, emptied epochs deleted by it.
	{"TABLE", "keystore.keyring_keys", readWrite},
	// What the rotation job could not do, per subject; erased with it.
	{"TABLE", "keystore.rotation_failures", readWrite},
	// Bank linking, verification, idempotency and events: feature data,
	// erased per subject and purged by retention.
	{"TABLE", "public.link_sessions", readWrite},
	{"TABLE", "public.items", readWrite},
	{"TABLE", "public.accounts", readWrite},
	{"TABLE", "public.provider_webhook_events", readWrite},
	{"TABLE", "public.sandbox_items", noDelete},
	{"TABLE", "public.sandbox_public_tokens", noDelete},
	{"TABLE", "public.idempotency_keys", readWrite},
	{"TABLE", "public.verifications", readWrite},
	// Failed verifications count against accounts and numbers: recorded,
	// never changed; erased per subject and purged by retention.
	{"TABLE", "public.verification_failures", []string{"SELECT", "INSERT", "DELETE"}},
	{"TABLE", "public.sandbox_rail_deposits", noDelete},
	{"TABLE", "public.outbox", readWrite},
	// Hosted pages: one row per page opening, erased per subject and
	// purged once expired.
	{"TABLE", "public.hosted_pages", readWrite},
	{"TABLE", "public.outbox_targets", readWrite},
	{"TABLE", "public.outbox_deliveries", []string{"SELECT", "INSERT", "DELETE"}},
	// Compliance records outlive their subjects: never deleted.
	{"TABLE", "public.legal_holds", noDelete},
	{"TABLE", "public.erasure_requests", noDelete},
}

// GrantResult says what GrantServing did.
type GrantResult struct {
	// Role is the serving role (the user of KLUIS_DATABASE_URL).
	Role string
	// Skipped is true when the serving role is the owner itself
	// (development with one URL): there is nothing to grant.
	Skipped bool
}

// GrantServing gives the role that servingURL logs in as exactly
// ServingGrants, connected as the owner (ownerURL), in one transaction: a
// serving instance never sees the role with less than it needs. When both
// URLs log in as the same role, it does nothing.
func GrantServing(ctx context.Context, ownerURL, servingURL string) (GrantResult, error) {
	role, err := currentUser(ctx, servingURL)
	if err != nil {
		return GrantResult{}, fmt.Errorf("migrations: connect as the serving role (KLUIS_DATABASE_URL): %w", err)
	}
	owner, err := connect(ctx, ownerURL)
	if err != nil {
		return GrantResult{}, fmt.Errorf("migrations: connect as the owner: %w", err)
	}
	defer owner.Close(context.WithoutCancel(ctx))
	var ownerRole string
	if err := owner.QueryRow(ctx, `SELECT current_user`).Scan(&ownerRole); err != nil {
		return GrantResult{}, fmt.Errorf("migrations: %w", err)
	}
	if ownerRole == role {
		return GrantResult{Role: role, Skipped: true}, nil
	}
	err = pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error {
		for _, stmt := range grantStatements(role) {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("%s: %w", stmt, err)
			}
		}
		return nil
	})
	if err != nil {
		return GrantResult{}, fmt.Errorf("migrations: grant the serving role: %w", err)
	}
	return GrantResult{Role: role}, nil
}

// grantStatements revokes everything the role holds on kluis's schemas and
// grants ServingGrants: the grants end up exactly the list, whatever was
// granted by hand before.
func grantStatements(role string) []string {
	r := pgx.Identifier{role}.Sanitize()
	schemas := strings.Join(Schemas, ", ")
	stmts := []string{
		"REVOKE ALL ON SCHEMA " + schemas + " FROM " + r,
		"REVOKE ALL ON ALL TABLES IN SCHEMA " + schemas + " FROM " + r,
		"REVOKE ALL ON ALL SEQUENCES IN SCHEMA " + schemas + " FROM " + r,
		"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA " + schemas + " FROM " + r,
		"GRANT USAGE ON SCHEMA " + schemas + " TO " + r,
	}
	for _, g := range ServingGrants {
		if len(g.Privileges) == 0 {
			continue
		}
		stmts = append(stmts, fmt.Sprintf("GRANT %s ON %s %s TO %s", strings.Join(g.Privileges, ", "), g.Kind, g.Object, r))
	}
	return stmts
}

func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := stdlibConfig(url)
	if err != nil {
		return nil, err
	}
	return pgx.ConnectConfig(ctx, cfg)
}

func currentUser(ctx context.Context, url string) (string, error) {
	conn, err := connect(ctx, url)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var role string
	err = conn.QueryRow(ctx, `SELECT current_user`).Scan(&role)
	return role, err
}

// ErrUnsafeServingRole is returned (wrapped, with every reason) by
// CheckServingRole when the role could change the audit log's history.
var ErrUnsafeServingRole = errors.New("the database role of KLUIS_DATABASE_URL may not serve in production")

// CheckServingRole refuses a serving role that could rewrite history: a
// superuser; a role that bypasses row security, creates roles (and so can
// make itself a member of the owner), or may set session_replication_role
// (which switches triggers off); one that owns, or is a member of a role
// that owns, any of kluis's schemas, tables or functions (an owner can
// disable triggers and drop tables), or may create objects beside them;
// or one holding UPDATE, DELETE or TRUNCATE on an audit table, or any write
// on the chain's own tables. q is a connection as the serving role.
func CheckServingRole(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}) error {
	var version int
	if err := q.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		return fmt.Errorf("migrations: check the serving role: %w", err)
	}
	query := roleProblems
	if version >= 150000 { // SET privileges on parameters came with Postgres 15
		query += parameterProblems
	}
	rows, err := q.Query(ctx, query, Schemas)
	if err != nil {
		return fmt.Errorf("migrations: check the serving role: %w", err)
	}
	problems, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("migrations: check the serving role: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrUnsafeServingRole, strings.Join(problems, "; "))
	}
	return nil
}

// roleProblems lists, in words, why the current role is unsafe to serve.
// $1 is Schemas. pg_has_role(…, 'MEMBER') counts roles the current role can
// SET ROLE to, inherited or not.
const roleProblems = `
WITH me AS (SELECT * FROM pg_roles WHERE rolname = current_user)
SELECT 'role ' || rolname || ' is a superuser' FROM me WHERE rolsuper
UNION ALL SELECT 'role ' || rolname || ' bypasses row security' FROM me WHERE rolbypassrls
UNION ALL SELECT 'role ' || rolname || ' can create roles (and so join the owner''s)' FROM me WHERE rolcreaterole
UNION ALL SELECT 'it owns schema ' || n.nspname FROM pg_namespace n
    WHERE n.nspname = ANY ($1) AND pg_has_role(current_user, n.nspowner, 'MEMBER')
UNION ALL SELECT 'it may create objects in schema ' || n.nspname || ' (REVOKE CREATE ON SCHEMA ' || n.nspname || ' FROM PUBLIC)' FROM pg_namespace n
    WHERE n.nspname = ANY ($1) AND NOT pg_has_role(current_user, n.nspowner, 'MEMBER')
      AND has_schema_privilege(current_user, n.oid, 'CREATE')
UNION ALL SELECT 'it owns ' || CASE c.relkind WHEN 'S' THEN 'sequence ' WHEN 'v' THEN 'view ' ELSE 'table ' END || n.nspname || '.' || c.relname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY ($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND pg_has_role(current_user, c.relowner, 'MEMBER')
UNION ALL SELECT 'it owns function ' || n.nspname || '.' || p.proname
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = ANY ($1) AND pg_has_role(current_user, p.proowner, 'MEMBER')
UNION ALL SELECT 'it may ' || priv || ' ' || t
    FROM unnest(ARRAY['public.audit_entries', 'public.audit_chain', 'public.audit_pending', 'public.audit_checkpoints']) t,
         unnest(ARRAY['UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER', 'REFERENCES']) priv
    WHERE to_regclass(t) IS NOT NULL AND has_table_privilege(current_user, t, priv)
UNION ALL SELECT 'it may INSERT ' || t
    FROM unnest(ARRAY['public.audit_chain', 'public.audit_pending', 'public.audit_checkpoints']) t
    WHERE to_regclass(t) IS NOT NULL AND has_table_privilege(current_user, t, 'INSERT')`

// parameterProblems adds, from Postgres 15 on, a role that may set
// session_replication_role without being a superuser.
const parameterProblems = `
UNION ALL SELECT 'it may set session_replication_role (which disables triggers)'
    WHERE has_parameter_privilege(current_user, 'session_replication_role', 'SET')`
