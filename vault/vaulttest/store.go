package vaulttest

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/localkek"
)

// Vault is a working vault over a test's database, as `kluis serve` builds
// one: the local development root key (in the test's temporary directory),
// the system keys, the keyring loaded, and the credential store. Feature
// packages' service-level tests use it instead of the HTTP harness.
type Vault struct {
	Keys   vault.KeyProvider
	System *vault.SystemKeys
	Store  *vault.Store
}

// Open builds a Vault over db (a migrated database, from pgtest.Open) that
// seals the credential kinds given (the features register their own, so the
// test names the ones it needs); it is closed when tb ends.
func Open(tb testing.TB, db *postgres.DB, kinds ...vault.Kind) Vault {
	tb.Helper()
	return OpenWithKeys(tb, db, nil, kinds...)
}

// OpenWithKeys is Open whose system keys are vault.DefaultSystemKeys and
// the features' systemKeys (verification.SystemKeys(), say): the vault
// knows no feature's key names, so the test names the ones it needs.
func OpenWithKeys(tb testing.TB, db *postgres.DB, systemKeys []string, kinds ...vault.Kind) Vault {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "kek.b64")
	if err := localkek.Generate(path); err != nil {
		tb.Fatal(err)
	}
	keys, err := localkek.New(path)
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	sys, err := vault.LoadSystemKeys(ctx, db, keys, slices.Concat(vault.DefaultSystemKeys, systemKeys)...)
	if err != nil {
		tb.Fatalf("vaulttest: system keys: %v", err)
	}
	tb.Cleanup(sys.Close)
	ring := vault.NewKeyRing(keys, vault.CacheOptions{})
	if err := ring.LoadKeyring(ctx, db.Aside()); err != nil {
		tb.Fatalf("vaulttest: keyring: %v", err)
	}
	return Vault{Keys: keys, System: sys, Store: vault.NewStore(db, ring, sys, vault.MustKinds(kinds...))}
}
