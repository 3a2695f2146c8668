package vault

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
)

// pendingToVersion1 rewrites ref's pending version as format version 1 (as
// a kluis from before owners were bound sealed it), under the same key.
func (v *testVault) pendingToVersion1(t *testing.T, ref string) {
	t.Helper()
	ctx := context.Background()
	c, err := v.store.OpenPending(ctx, v.db.Pool, ref)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Zero()
	sk := v.storedKey(t, c.SubjectID, c.KeyVersion)
	var env []byte
	err = v.ring.withStoredKey(ctx, c.SubjectID, sk, func(key []byte) error {
		var err error
		env, err = sealEnvelopeV1(key, Binding{SubjectID: c.SubjectID, Ref: ref, Kind: c.Kind, KeyVersion: c.KeyVersion}, c.Secret)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	v.exec(t, `UPDATE credentials SET pending_envelope = $2 WHERE ref = $1`, ref, env)
}

func (v *testVault) pendingEnvelope(t *testing.T, ref string) []byte {
	t.Helper()
	var env []byte
	if err := v.db.Pool.QueryRow(context.Background(), `SELECT pending_envelope FROM credentials WHERE ref = $1`, ref).Scan(&env); err != nil {
		t.Fatal(err)
	}
	return env
}

func TestAPendingVersionIsBoundToTheCredentialsOwner(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	sub := v.subject(t, "user-pending-owner")
	a, b := ItemOwner(kluis.NewID(kluis.PrefixItem)), ItemOwner(kluis.NewID(kluis.PrefixItem))
	ref, err := v.trySealFor(a, sub, KindBankAccessToken, `{"access_token":"old"}`, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.sealPending(ref, 1, `{"access_token":"new"}`); err != nil {
		t.Fatal(err)
	}
	if got := EnvelopeVersion(v.pendingEnvelope(t, ref)); got != EnvelopeV2 {
		t.Fatalf("pending version sealed as format %d, want 2", got)
	}
	c, err := v.store.OpenPendingOwned(ctx, v.db.Pool, a, ref)
	if err != nil || string(c.Secret) != `{"access_token":"new"}` || c.Owner != a || !c.OwnerBound {
		t.Fatalf("the owner's pending version: %v %v", c, err)
	}
	// Followed from another item's pointer: never that item's token.
	_, err = v.store.OpenPendingOwned(ctx, v.db.Pool, b, ref)
	wantCode(t, err, EIntegrity)
	// The owner is in the pending version's AAD: renaming it (as only the
	// table's owner could) leaves a version that opens for no one.
	v.asTableOwner(t, `UPDATE credentials SET owner_id = $2 WHERE ref = $1`, ref, b.ID)
	_, err = v.store.OpenPending(ctx, v.db.Pool, ref)
	wantCode(t, err, EIntegrity)
	_, err = v.store.OpenPendingOwned(ctx, v.db.Pool, b, ref)
	wantCode(t, err, EIntegrity)
}

func TestNoPendingVersionIsSealedForACredentialWithNoKnownOwner(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	sub := v.subject(t, "user-pending-orphan")
	ref := v.seal(t, sub, KindBankAccessToken, `{"access_token":"old"}`, "")
	v.toVersion1(t, ref, Owner{})
	wantCode(t, v.sealPending(ref, 1, `{"access_token":"new"}`), EIntegrity)
	if n := v.count(t, `SELECT count(*) FROM credentials WHERE ref = $1 AND pending_envelope IS NULL`, ref); n != 1 {
		t.Fatal("a pending version was stored for a credential nobody may reveal")
	}
}

func TestRotationResealsAVersion1PendingVersionAsVersion2WithItsOwner(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	sub := v.subject(t, "user-pending-v1")
	a := ItemOwner(kluis.NewID(kluis.PrefixItem))
	ref, err := v.trySealFor(a, sub, KindBankAccessToken, `{"access_token":"old"}`, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.sealPending(ref, 1, `{"access_token":"new"}`); err != nil {
		t.Fatal(err)
	}
	// Only the pending version is version 1 (a rotation under way when kluis
	// was upgraded): the subject is still due.
	v.pendingToVersion1(t, ref)
	due, err := SubjectsDueForReseal(ctx, v.db.Pool, 365*24*time.Hour, "", 100)
	if err != nil || !slices.Contains(due, sub) {
		t.Fatalf("due = %v, %v; want %s (a version-1 pending version)", due, err, sub)
	}
	before := v.pendingEnvelope(t, ref)

	// Pointers that do not confirm the owner: nothing is bound.
	_, err = v.store.ResealSubject(ctx, v.db, sub, newFakePointers())
	wantCode(t, err, EIntegrity)
	if got := v.pendingEnvelope(t, ref); string(got) != string(before) {
		t.Fatal("the unconfirmed pending version was changed")
	}

	p := newFakePointers()
	p.point(a, ref)
	res, err := v.store.Rotate(ctx, v.db, RotationOptions{Owners: p})
	if err != nil || res.ResealedSubjects != 1 {
		t.Fatalf("rotation %+v, %v", res, err)
	}
	if got := EnvelopeVersion(v.pendingEnvelope(t, ref)); got != EnvelopeV2 {
		t.Fatalf("pending version is format %d after the re-seal, want 2", got)
	}
	c, err := v.instance(t, CacheOptions{}).store.OpenPendingOwned(ctx, v.db.Pool, a, ref)
	if err != nil || string(c.Secret) != `{"access_token":"new"}` || !c.OwnerBound || c.KeyVersion != 2 {
		t.Fatalf("pending version after the re-seal: %v %v", c, err)
	}
	due, err = SubjectsDueForReseal(ctx, v.db.Pool, 365*24*time.Hour, "", 100)
	if err != nil || slices.Contains(due, sub) {
		t.Fatalf("due after the re-seal = %v, %v", due, err)
	}
}
