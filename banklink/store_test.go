package banklink

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/vaulttest"
)

func TestTheOwnerScopedReadsFindNothingForAnEmptySubject(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	sid, err := vault.EnsureSubject(ctx, db.Pool, "user_store_owner")
	if err != nil {
		t.Fatal(err)
	}
	itemID, accountID := kluis.NewID(kluis.PrefixItem), kluis.NewID(kluis.PrefixAccount)
	// The item's access token is sealed by the vault, which owns the
	// credentials table.
	var ref string
	if err := db.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		ref, err = vaulttest.Open(t, db, CredentialKinds()...).Store.Seal(ctx, tx, vault.ItemOwner(itemID), sid, KindAccessToken, []byte("tok"), "")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO items (id, subject_id, provider, provider_item_id, institution_id, institution_name, status, credential_ref, created_at, updated_at)
		VALUES ($1, $2, 'sandbox', 'pi-1', 'ins_sandbox', 'Sandbox', 'active', $3, now(), now())`, itemID, sid, ref); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO accounts (id, subject_id, item_id, provider_account_id, name, mask, type, subtype, created_at, updated_at)
		VALUES ($1, $2, $3, 'pa-1', 'Checking', '1234', 'depository', 'checking', now(), now())`, accountID, sid, itemID); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		read func() error
		want string
	}{
		{"the owner reads their item", func() error { _, err := getItem(ctx, db.Pool, itemID, sid, false); return err }, ""},
		{"an empty subject reads no item", func() error { _, err := getItem(ctx, db.Pool, itemID, "", false); return err }, kluis.ENotFound},
		{"an internal read finds the item", func() error { _, err := anyItem(ctx, db.Pool, itemID); return err }, ""},
		{"the owner reads their account", func() error { _, err := getAccount(ctx, db.Pool, accountID, sid); return err }, ""},
		{"an empty subject reads no account", func() error { _, err := getAccount(ctx, db.Pool, accountID, ""); return err }, kluis.ENotFound},
		{"an internal read finds the account", func() error { _, err := anyAccount(ctx, db.Pool, accountID); return err }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := kluis.ErrorCode(tc.read()); got != tc.want {
				t.Errorf("code = %q, want %q", got, tc.want)
			}
		})
	}
}
