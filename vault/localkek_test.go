package vault_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/accountnumber"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/localkek"
)

// TestTheStoreWorksOnTheLocalRootKey runs the exported API end to end on a
// real provider: seal, re-seal, a new keyring epoch, open on a cold cache.
func TestTheStoreWorksOnTheLocalRootKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := pgtest.Open(t)
	path := filepath.Join(t.TempDir(), "root.key")
	if err := localkek.Generate(path); err != nil {
		t.Fatal(err)
	}
	p, err := localkek.New(path)
	if err != nil {
		t.Fatal(err)
	}
	sys, err := vault.LoadSystemKeys(ctx, db, p)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	store := vault.NewStore(db, vault.NewKeyRing(p, vault.CacheOptions{}), sys, vault.MustKinds(banklink.CredentialKinds()...))
	sub, err := vault.EnsureSubject(ctx, db.Pool, "user-1")
	if err != nil {
		t.Fatal(err)
	}
	var ref string
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		ref, err = store.Seal(ctx, tx, vault.AccountOwner(kluis.NewID(kluis.PrefixAccount)), sub, accountnumber.Kind, []byte(`{"account_number":"0001234567"}`), "0001234567")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.ResealSubject(ctx, db, sub, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Rotate(ctx, db, vault.RotationOptions{NewEpoch: true}); err != nil {
		t.Fatal(err)
	}
	cold := vault.NewStore(db, vault.NewKeyRing(p, vault.CacheOptions{}), sys, vault.MustKinds(banklink.CredentialKinds()...))
	c, err := cold.Open(ctx, ref)
	if err != nil || string(c.Secret) != `{"account_number":"0001234567"}` || c.KeyVersion != 2 {
		t.Fatalf("open after reseal and rewrap: %v %v", c, err)
	}
	found, err := cold.FindByBlindIndex(ctx, db.Pool, accountnumber.Kind, "000-123-4567")
	if err != nil || len(found) != 1 || found[0].Ref != ref {
		t.Fatalf("blind index: %v %v", found, err)
	}
}
