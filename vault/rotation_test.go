package vault

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
)

func TestRootRotationRewrapsOnlyTheKeyringAndSystemKeys(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	refs := map[string]string{}
	for i := 0; i < 3; i++ {
		sub := v.subject(t, fmt.Sprintf("user-%d", i))
		secret := fmt.Sprintf(`{"access_token":"t%d"}`, i)
		refs[v.seal(t, sub, KindBankAccessToken, secret, "")] = secret
	}
	subjectKeys := v.subjectKeyBytes(t)
	v.provider.rotateRoot("2")
	rewraps, unwraps, generates := v.provider.rewraps.Load(), v.provider.unwraps.Load(), v.provider.generates.Load()

	res, err := v.store.Rotate(ctx, v.db, RotationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + len(DefaultSystemKeys); res.RootRewrapped != want || res.Rewrapped != 0 || res.NewEpoch {
		t.Fatalf("rotation = %+v, want %d root rewraps (1 keyring key, %d system keys) and nothing else", res, want, len(DefaultSystemKeys))
	}
	// One rewrap call per table (the fake batches, as Transit does) and no
	// unwrap or new key: the subject keys are not the provider's business.
	if got := v.provider.rewraps.Load() - rewraps; got != 2 {
		t.Fatalf("%d rewrap calls, want 2", got)
	}
	if v.provider.unwraps.Load() != unwraps || v.provider.generates.Load() != generates {
		t.Fatal("root rotation unwrapped or made keys")
	}
	if n := v.count(t, `SELECT (SELECT count(*) FROM keystore.keyring_keys WHERE root_version <> '2') + (SELECT count(*) FROM keystore.system_keys WHERE root_version <> '2')`); n != 0 {
		t.Fatalf("%d keys still under the old root", n)
	}
	if fmt.Sprint(v.subjectKeyBytes(t)) != fmt.Sprint(subjectKeys) {
		t.Fatal("root rotation changed subject keys")
	}

	// With the old root gone, everything still opens, on a new instance.
	v.provider.retireRoot("1")
	other := v.instance(t, CacheOptions{})
	for ref, secret := range refs {
		c, err := other.store.Open(ctx, ref)
		if err != nil || string(c.Secret) != secret {
			t.Fatalf("%s after root rotation: %v", ref, err)
		}
	}
	sys, err := LoadSystemKeys(ctx, v.db, v.provider)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	if sys.Pseudonym("subject", "x") != v.sys.Pseudonym("subject", "x") {
		t.Fatal("the rewrapped pseudonym key is not the same key")
	}
}

func TestResealGivesTheSubjectANewKeyAndDeletesTheOld(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	sub, other := v.subject(t, "user-1"), v.subject(t, "user-2")
	refs := map[string]string{}
	for i := 0; i < 3; i++ {
		secret := fmt.Sprintf(`{"access_token":"t%d"}`, i)
		refs[v.seal(t, sub, KindBankAccessToken, secret, "")] = secret
	}
	otherRef := v.seal(t, other, KindBankAccessToken, `{"access_token":"o"}`, "")
	before := map[string][]byte{}
	for ref := range refs {
		before[ref] = v.envelope(t, ref)
	}

	res, err := v.store.ResealSubject(ctx, v.db, sub, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res != (ResealResult{NewVersion: 2, Records: 3, DestroyedVersions: 1}) {
		t.Fatalf("got %+v", res)
	}
	if n := v.count(t, `SELECT count(*) FROM keystore.subject_keys WHERE subject_id = $1 AND version = 2`, sub); n != 1 {
		t.Fatal("the subject does not have exactly key version 2")
	}
	if n := v.count(t, `SELECT count(*) FROM keystore.subject_keys WHERE subject_id = $1`, sub); n != 1 {
		t.Fatal("old key versions were kept")
	}
	for ref, secret := range refs {
		if bytes.Equal(v.envelope(t, ref), before[ref]) {
			t.Fatalf("%s was not re-sealed", ref)
		}
		c, err := v.instance(t, CacheOptions{}).store.Open(ctx, ref)
		if err != nil || string(c.Secret) != secret || c.KeyVersion != 2 {
			t.Fatalf("%s after reseal: %v %v", ref, c, err)
		}
	}
	if _, err := v.store.Open(ctx, otherRef); err != nil {
		t.Fatalf("another subject's record: %v", err)
	}
	newRef := v.seal(t, sub, KindBankAccessToken, `{"access_token":"new"}`, "")
	if c, err := v.store.Open(ctx, newRef); err != nil || c.KeyVersion != 2 {
		t.Fatalf("a new seal after reseal: %v %v", c, err)
	}
	_, err = v.store.ResealSubject(ctx, v.db, v.subject(t, "no-records"), nil)
	wantCode(t, err, kluis.ENotFound)
}

func TestAResealWaitsForASealInProgressAndResealsItsRecord(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	sub := v.subject(t, "user-1")
	v.seal(t, sub, KindBankAccessToken, `{"access_token":"first"}`, "")

	tx, err := v.db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	ref, err := v.store.Seal(ctx, tx, newOwner(KindBankAccessToken), sub, KindBankAccessToken, []byte(`{"access_token":"in flight"}`), "")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := v.store.ResealSubject(ctx, v.db, sub, nil)
		done <- err
	}()
	// Wait until the re-seal is blocked on the seal's lock, then commit.
	for v.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c, err := v.instance(t, CacheOptions{}).store.Open(ctx, ref)
	if err != nil || string(c.Secret) != `{"access_token":"in flight"}` || c.KeyVersion != 2 {
		t.Fatalf("the record sealed during the re-seal: %v %v", c, err)
	}
}

func TestSubjectsDueForResealAreThoseWithOldKeys(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	old, fresh := v.subject(t, "old"), v.subject(t, "fresh")
	v.seal(t, old, KindBankAccessToken, `{"access_token":"o"}`, "")
	v.seal(t, fresh, KindBankAccessToken, `{"access_token":"f"}`, "")
	v.exec(t, `UPDATE keystore.subject_keys SET created_at = now() - interval '400 days' WHERE subject_id = $1`, old)
	due, err := SubjectsDueForReseal(ctx, v.db.Pool, 365*24*time.Hour, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 1 || due[0] != old {
		t.Fatalf("due %v, want only %s", due, old)
	}
}
