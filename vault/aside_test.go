package vault

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The keyring and the system keys read the database from inside callers'
// work: a seal in a caller's transaction may have to learn of a new epoch or
// confirm a key. With every connection of the main pool held by such
// callers, those reads must still finish (they use the side pool); taken
// from the main pool they would wait forever for a connection only the
// callers' own commits can free (a vault test hung that way under load).
func TestKeyReadsFinishWhileCallersHoldEveryConnection(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range v.db.Pool.Config().MaxConns {
		tx, err := v.db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func(tx pgx.Tx) { _ = tx.Rollback(context.Background()) }(tx)
	}
	if _, err := v.ring.keyring.readActive(ctx); err != nil {
		t.Fatalf("learning the active epoch with the pool held: %v", err)
	}
	if err := v.ring.keyring.refresh(ctx, true); err != nil {
		t.Fatalf("refreshing the keyring with the pool held: %v", err)
	}
	if err := v.sys.confirm(ctx); err != nil {
		t.Fatalf("confirming the system keys with the pool held: %v", err)
	}
}
