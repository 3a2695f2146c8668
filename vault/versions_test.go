package vault

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
)

func (v *testVault) sealPending(ref string, want uint32, secret string) error {
	return v.db.InTx(context.Background(), func(tx pgx.Tx) error {
		return v.store.SealPending(context.Background(), tx, ref, want, []byte(secret))
	})
}

func (v *testVault) open(t *testing.T, ref string) string {
	t.Helper()
	c, err := v.store.Open(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Zero()
	return string(c.Secret)
}

func TestAPendingVersionKeepsTheRefAndBecomesCurrentOnlyWhenPromoted(t *testing.T) {
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	sub := v.subject(t, "user-versions")
	ref := v.seal(t, sub, KindBankAccessToken, `{"access_token":"old"}`, "")
	if err := v.sealPending(ref, 1, `{"access_token":"new"}`); err != nil {
		t.Fatal(err)
	}
	if got := v.open(t, ref); got != `{"access_token":"old"}` {
		t.Fatalf("before promotion the ref opens %s", got)
	}
	p, err := v.store.OpenPending(ctx, v.db.Pool, ref)
	if err != nil || string(p.Secret) != `{"access_token":"new"}` {
		t.Fatalf("pending = %s, %v", p.Secret, err)
	}
	wantCode(t, v.sealPending(ref, 1, `{"access_token":"another"}`), kluis.EConflict)

	// A re-seal of the subject (old key versions deleted) keeps the pending
	// version openable: it is a live token.
	if _, err := v.store.ResealSubject(ctx, v.db, sub, nil); err != nil {
		t.Fatal(err)
	}
	if p, err := v.store.OpenPending(ctx, v.db.Pool, ref); err != nil || string(p.Secret) != `{"access_token":"new"}` {
		t.Fatalf("pending after a re-seal = %s, %v", p.Secret, err)
	}
	err = v.db.InTx(ctx, func(tx pgx.Tx) error {
		n, err := v.store.PromotePending(ctx, tx, ref)
		if err == nil && n != 2 {
			t.Errorf("version after promotion = %d, want 2", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.open(t, ref); got != `{"access_token":"new"}` {
		t.Fatalf("after promotion the ref opens %s", got)
	}
	vs, err := v.store.CredentialVersions(ctx, v.db.Pool, ref, false)
	if err != nil || vs != (Versions{Ref: ref, Version: 2}) {
		t.Fatalf("versions = %+v, %v", vs, err)
	}
	// A pending version sealed for an older version is refused.
	wantCode(t, v.sealPending(ref, 1, `{"access_token":"late"}`), kluis.EConflict)
}

func TestConcurrentPendingSealsOfOneVersionStoreOne(t *testing.T) {
	v := newTestVault(t, CacheOptions{})
	sub := v.subject(t, "user-versions-race")
	ref := v.seal(t, sub, KindBankAccessToken, `{"access_token":"old"}`, "")
	var wg sync.WaitGroup
	var stored atomic.Int32
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v.sealPending(ref, 1, `{"access_token":"new"}`) == nil {
				stored.Add(1)
			}
		}()
	}
	wg.Wait()
	if stored.Load() != 1 {
		t.Fatalf("%d pending versions stored, want 1", stored.Load())
	}
}

func TestARevokedCredentialIsATombstoneThatAnswersRevoked(t *testing.T) {
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	sub := v.subject(t, "user-revoked")
	ref := v.seal(t, sub, KindAccountNumber, `{"account_number":"123456789"}`, "123456789")
	if err := v.sealPending(ref, 1, `{"account_number":"123456789"}`); err != nil {
		t.Fatal(err)
	}
	err := v.db.InTx(ctx, func(tx pgx.Tx) error { return v.store.Revoke(ctx, tx, ref) })
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.store.Open(ctx, ref)
	wantCode(t, err, CodeCredentialRevoked)
	_, err = v.store.OpenPending(ctx, v.db.Pool, ref)
	wantCode(t, err, kluis.ENotFound)
	if n := v.count(t, `SELECT count(*) FROM credentials WHERE ref = $1 AND envelope IS NULL AND pending_envelope IS NULL
		AND blind_index IS NULL AND revoked_at IS NOT NULL`, ref); n != 1 {
		t.Fatal("the tombstone still holds ciphertext or the blind index")
	}
	if found, err := v.store.FindByBlindIndex(ctx, v.db.Pool, KindAccountNumber, "123456789"); err != nil || len(found) != 0 {
		t.Fatalf("the blind index still finds a revoked number: %v, %v", found, err)
	}
	// Re-sealing the subject skips tombstones; Destroy deletes them.
	if _, err := v.store.ResealSubject(ctx, v.db, sub, nil); err != nil {
		t.Fatal(err)
	}
	err = v.db.InTx(ctx, func(tx pgx.Tx) error { return v.store.Destroy(ctx, tx, ref) })
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.store.Open(ctx, ref)
	wantCode(t, err, kluis.ENotFound)
}
