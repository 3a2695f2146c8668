package migrations_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/migrations"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// TestEveryTableHasDeclaredGrants fails when a migration adds a table (or a
// SECURITY DEFINER function) to kluis's schemas without a line in
// migrations.ServingGrants, and when a line names an object that is gone.
func TestEveryTableHasDeclaredGrants(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	rows, err := db.Pool.Query(ctx, `
		SELECT 'TABLE', n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = ANY ($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
		UNION ALL
		SELECT 'FUNCTION', p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = ANY ($1) AND p.prosecdef`, migrations.Schemas)
	if err != nil {
		t.Fatal(err)
	}
	have, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var kind, name string
		err := r.Scan(&kind, &name)
		if kind == "FUNCTION" && !strings.Contains(name, ".") {
			name = "public." + name // regprocedure leaves out the schema on the search path
		}
		return kind + " " + name, err
	})
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string]bool{}
	for _, g := range migrations.ServingGrants {
		declared[g.Kind+" "+strings.ReplaceAll(g.Object, ", ", ",")] = true
	}
	for _, obj := range have {
		if !declared[obj] {
			t.Errorf("%s has no line in migrations.ServingGrants: declare what the serving role may do with it (or nothing)", obj)
		}
		delete(declared, obj)
	}
	for obj := range declared {
		if strings.HasPrefix(obj, "TABLE ") {
			t.Errorf("migrations.ServingGrants names %s, which does not exist", obj)
		}
	}
}

// TestTheServingRoleHoldsExactlyTheDeclaredGrants checks the grants as the
// database sees them, as pgtest (like `kluis migrate`) set them up.
func TestTheServingRoleHoldsExactlyTheDeclaredGrants(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	for _, g := range migrations.ServingGrants {
		if g.Kind != "TABLE" {
			var can bool
			if err := db.Pool.QueryRow(ctx, `SELECT has_function_privilege(current_user, $1, 'EXECUTE')`, g.Object).Scan(&can); err != nil {
				t.Fatal(err)
			}
			if want := slices.Contains(g.Privileges, "EXECUTE"); can != want {
				t.Errorf("EXECUTE on %s = %v, want %v", g.Object, can, want)
			}
			continue
		}
		for _, priv := range []string{"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"} {
			var can bool
			if err := db.Pool.QueryRow(ctx, `SELECT has_table_privilege(current_user, $1, $2)`, g.Object, priv).Scan(&can); err != nil {
				t.Fatal(err)
			}
			if want := slices.Contains(g.Privileges, priv); can != want {
				t.Errorf("%s on %s = %v, want %v", priv, g.Object, can, want)
			}
		}
	}
}

// TestGrantServingIsIdempotentAndTakesBackWhatWasGrantedByHand: the grants
// of the old manual setup (docs/DEPLOYMENT.md before `kluis migrate` did
// it) included UPDATE and DELETE on every table; migrate takes them back.
func TestGrantServingIsIdempotentAndTakesBackWhatWasGrantedByHand(t *testing.T) {
	db, u := pgtest.Open(t)
	owner := pgtest.OpenOwner(t, u)
	ctx := context.Background()
	if _, err := owner.Pool.Exec(ctx, `GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public, keystore TO `+pgtest.ServingRole); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		res, err := migrations.GrantServing(ctx, pgtest.OwnerURL(t, u), u)
		if err != nil || res.Skipped || res.Role != pgtest.ServingRole {
			t.Fatalf("GrantServing = %+v, %v", res, err)
		}
	}
	var can bool
	if err := db.Pool.QueryRow(ctx, `SELECT has_table_privilege(current_user, 'audit_entries', 'DELETE')`).Scan(&can); err != nil || can {
		t.Fatalf("after migrate the serving role may still DELETE audit entries (%v)", err)
	}
	res, err := migrations.GrantServing(ctx, pgtest.OwnerURL(t, u), pgtest.OwnerURL(t, u))
	if err != nil || !res.Skipped {
		t.Fatalf("one role for both: %+v, %v, want skipped", res, err)
	}
}

// TestProductionRefusesARoleThatCouldRewriteHistory: the serving role as
// migrate leaves it passes; made a superuser's session, given UPDATE on the
// audit log, or made owner of a table, it does not, and the error says why.
func TestProductionRefusesARoleThatCouldRewriteHistory(t *testing.T) {
	db, u := pgtest.Open(t)
	owner := pgtest.OpenOwner(t, u)
	ctx := context.Background()
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if err := migrations.CheckServingRole(ctx, conn); err != nil {
		t.Fatalf("the serving role as migrate sets it up is refused: %v", err)
	}
	var ownerRole string
	if err := owner.Pool.QueryRow(ctx, `SELECT current_user`).Scan(&ownerRole); err != nil {
		t.Fatal(err)
	}
	err = migrations.CheckServingRole(ctx, owner.Pool)
	if !errors.Is(err, migrations.ErrUnsafeServingRole) || !strings.Contains(err.Error(), "superuser") {
		t.Fatalf("the owner (a superuser here) = %v, want refused as a superuser", err)
	}
	for name, grant := range map[string]string{
		"it may UPDATE public.audit_entries":     `GRANT UPDATE ON audit_entries TO ` + pgtest.ServingRole,
		"it may TRUNCATE public.audit_chain":     `GRANT TRUNCATE ON audit_chain TO ` + pgtest.ServingRole,
		"it may INSERT public.audit_checkpoints": `GRANT INSERT ON audit_checkpoints TO ` + pgtest.ServingRole,
		"it owns table public.job_runs":          `ALTER TABLE job_runs OWNER TO ` + pgtest.ServingRole,
		"it owns function public.audit_seal":     `ALTER FUNCTION audit_seal(integer) OWNER TO ` + pgtest.ServingRole,
		"it may set session_replication_role":    `GRANT SET ON PARAMETER session_replication_role TO ` + pgtest.ServingRole,
		"it owns schema keystore":                `ALTER SCHEMA keystore OWNER TO ` + pgtest.ServingRole,
		"it owns table public.audit_entries":     `GRANT ` + ownerRole + ` TO ` + pgtest.ServingRole, // a member of the owner
		"can create roles":                       `ALTER ROLE ` + pgtest.ServingRole + ` CREATEROLE`,
		"it may create objects in schema public": `GRANT CREATE ON SCHEMA public TO PUBLIC`,
	} {
		t.Run(name, func(t *testing.T) {
			// In a transaction that is rolled back: the role is shared.
			tx, err := owner.Pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			if _, err := tx.Exec(ctx, grant); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+pgtest.ServingRole); err != nil {
				t.Fatal(err)
			}
			err = migrations.CheckServingRole(ctx, tx)
			if !errors.Is(err, migrations.ErrUnsafeServingRole) || !strings.Contains(err.Error(), name) {
				t.Fatalf("CheckServingRole = %v, want it to say %q", err, name)
			}
		})
	}
}
