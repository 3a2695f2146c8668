package banklink_test

import (
	"context"
	"testing"

	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
)

// TestASessionThatSucceededBeforeTheUpgradeIsStillExchanged: a session
// whose public token an earlier release hashed under the key bank linking
// shared with verification (banklink.SystemKeyHeld) is exchanged for its
// item after the upgrade, once; another token is still refused.
func TestASessionThatSucceededBeforeTheUpgradeIsStillExchanged(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	actor := audit.User("user_bl_upgrade", "req_1")
	ls, tok := e.succeeded(t, actor)
	// What the earlier release stored: the hash under the held key.
	held, err := e.vault.System.MAC(banklink.SystemKeyHeld, []byte("kluis/banklink/public-token"), []byte(tok))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Pool.Exec(ctx, `UPDATE link_sessions SET public_token_hash = $2 WHERE id = $1`, ls.ID, held); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.Exchange(ctx, actor, ls.ID, tok+"x"); err == nil {
		t.Fatal("another token was exchanged")
	}
	it, created, err := e.svc.Exchange(ctx, actor, ls.ID, tok)
	if err != nil || !created {
		t.Fatalf("exchange: created %v, %v", created, err)
	}
	again, created, err := e.svc.Exchange(ctx, actor, ls.ID, tok)
	if err != nil || created || again.ID != it.ID {
		t.Fatalf("the same token again: %+v created %v, %v", again, created, err)
	}
}
