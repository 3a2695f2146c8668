package pgtest

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestTheServingRoleIsCreatedOnceWhenManyStartAtOnce: test binaries start
// together and each makes sure the shared role exists; none may fail on a
// role another created a moment before. (A role of this test's own, dropped
// at its end, stands in for the shared one, which is never dropped.)
func TestTheServingRoleIsCreatedOnceWhenManyStartAtOnce(t *testing.T) {
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		unreachable(t, err)
	}
	defer admin.Close(ctx)
	name := "kluis_test_role_" + randomHex(6)
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP ROLE IF EXISTS "+name) })
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, ServerURL())
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(ctx)
			errs <- ensureRole(ctx, conn, name, "x")
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("ensureRole: %v", err)
		}
	}
	var super, login bool
	if err := admin.QueryRow(ctx, `SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = $1`, name).Scan(&super, &login); err != nil || super || !login {
		t.Fatalf("the role: super %v, login %v (%v); want a login role that is no superuser", super, login, err)
	}
}
