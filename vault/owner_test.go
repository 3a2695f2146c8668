package vault

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// fakePointers stands in for bank linking's items and accounts: which
// owners point at each credential.
type fakePointers struct {
	mu sync.Mutex
	by map[string][]Owner
}

func newFakePointers() *fakePointers { return &fakePointers{by: map[string][]Owner{}} }

func (p *fakePointers) point(owner Owner, ref string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.by[ref] = append(p.by[ref], owner)
}

func (p *fakePointers) PointersTo(_ context.Context, _ postgres.Querier, ref string) ([]Owner, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Owner(nil), p.by[ref]...), nil
}

// asTableOwner runs sql as the table's owner (the role that migrated), with
// the trigger that keeps owners fixed switched off, as only the owner could
// (the serving role cannot): the writer the AAD's owner binding is for.
func (v *testVault) asTableOwner(t *testing.T, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	err := pgtest.OpenOwner(t, v.dbURL).InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `ALTER TABLE credentials DISABLE TRIGGER credentials_owner_fixed`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, sql, args...); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `ALTER TABLE credentials ENABLE TRIGGER credentials_owner_fixed`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// toVersion1 rewrites ref's record as format version 1 (as kluis sealed it
// before owners were bound), under the same key, and sets its owner columns
// to owner (NULL for the zero owner), as the migration left them.
func (v *testVault) toVersion1(t *testing.T, ref string, owner Owner) {
	t.Helper()
	ctx := context.Background()
	c, err := v.store.Open(ctx, ref)
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
	var typ, id *string
	if !owner.IsZero() {
		typ, id = &owner.Type, &owner.ID
	}
	v.asTableOwner(t, `UPDATE credentials SET envelope = $2, owner_type = $3, owner_id = $4 WHERE ref = $1`, ref, env, typ, id)
}

func TestOpenOwnedRefusesAnotherOwnersCredential(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	sub := v.subject(t, "user-1")
	a, b := AccountOwner(kluis.NewID(kluis.PrefixAccount)), AccountOwner(kluis.NewID(kluis.PrefixAccount))
	refA, err := v.trySealFor(a, sub, KindAccountNumber, `{"account_number":"111"}`, "")
	if err != nil {
		t.Fatal(err)
	}
	refB, err := v.trySealFor(b, sub, KindAccountNumber, `{"account_number":"222"}`, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.store.OpenOwned(ctx, a, refA)
	if err != nil || string(c.Secret) != `{"account_number":"111"}` || c.Owner != a || !c.OwnerBound {
		t.Fatalf("A's own credential: %v %v", c, err)
	}
	// A's pointer made to point at B's credential: never B's number.
	c, err = v.store.OpenOwned(ctx, a, refB)
	wantCode(t, err, EIntegrity)
	if c.Secret != nil {
		t.Fatal("a refused open returned a secret")
	}
	if kluis.ErrorMessage(err) != "internal error" {
		t.Fatalf("message %q says more than nothing", kluis.ErrorMessage(err))
	}
	// The item of the same id is not the account.
	_, err = v.store.OpenOwned(ctx, Owner{Type: OwnerItem, ID: a.ID}, refA)
	wantCode(t, err, EIntegrity)
}

func TestSealRefusesAnOwnerThatDoesNotFitTheKind(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	sub := v.subject(t, "user-1")
	for _, owner := range []Owner{
		{}, ItemOwner(kluis.NewID(kluis.PrefixItem)), AccountOwner("itm_x"), {Type: "user", ID: kluis.NewID(kluis.PrefixAccount)},
	} {
		_, err := v.trySealFor(owner, sub, KindAccountNumber, `{"account_number":"1"}`, "")
		wantCode(t, err, kluis.EInvalid)
		// A holder's ID number belongs to the account it was entered with.
		_, err = v.trySealFor(owner, sub, KindIDNumber, `{"id_number":"1"}`, "")
		wantCode(t, err, kluis.EInvalid)
	}
	// An account owns an ID number, and only through OpenOwned of that
	// account does it open; an item, or another account, gets EIntegrity.
	a := AccountOwner(kluis.NewID(kluis.PrefixAccount))
	ref, err := v.trySealFor(a, sub, KindIDNumber, `{"id_number":"1"}`, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.store.OpenOwned(context.Background(), a, ref)
	if err != nil || c.Owner != a || !c.OwnerBound {
		t.Fatalf("OpenOwned(own ID number) = %+v, %v", c, err)
	}
	c.Zero()
	for _, other := range []Owner{AccountOwner(kluis.NewID(kluis.PrefixAccount)), ItemOwner(kluis.NewID(kluis.PrefixItem))} {
		_, err = v.store.OpenOwned(context.Background(), other, ref)
		wantCode(t, err, EIntegrity)
	}
}

func TestAnEditedOwnerColumnFailsToOpen(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	sub := v.subject(t, "user-1")
	tests := []struct{ name, edit string }{
		{"another account's id", `UPDATE credentials SET owner_id = 'acc_someoneelse0000000000000000' WHERE ref = $1`},
		{"the owner removed", `UPDATE credentials SET owner_type = NULL, owner_id = NULL WHERE ref = $1`},
		{"another type", `UPDATE credentials SET owner_type = 'item' WHERE ref = $1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := v.seal(t, sub, KindAccountNumber, `{"account_number":"333"}`, "")
			// A role that does not own the table cannot do it at all.
			if _, err := v.db.Pool.Exec(ctx, tt.edit, ref); err == nil {
				t.Fatal("an owner column was changed")
			}
			// The table's owner can; the record then does not open.
			v.asTableOwner(t, tt.edit, ref)
			_, err := v.store.Open(ctx, ref)
			wantCode(t, err, EIntegrity)
			if !errors.Is(err, ErrEnvelopeAuth) {
				t.Fatalf("got %v, want ErrEnvelopeAuth in the chain", err)
			}
		})
	}
}

func TestACiphertextMovedToAnotherOwnersRowFailsToOpen(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	sub := v.subject(t, "user-1")
	refA := v.seal(t, sub, KindAccountNumber, `{"account_number":"111"}`, "")
	refB := v.seal(t, sub, KindAccountNumber, `{"account_number":"222"}`, "")
	// B's ciphertext, ref and owner copied onto A's row: the ref differs.
	v.asTableOwner(t, `UPDATE credentials a SET envelope = b.envelope, owner_type = b.owner_type, owner_id = b.owner_id
		FROM credentials b WHERE a.ref = $1 AND b.ref = $2`, refA, refB)
	_, err := v.store.Open(ctx, refA)
	wantCode(t, err, EIntegrity)
}

func TestAVersion1RecordOpensWithItsRowsOwnerUnbound(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	sub := v.subject(t, "user-1")
	a := AccountOwner(kluis.NewID(kluis.PrefixAccount))
	ref, err := v.trySealFor(a, sub, KindAccountNumber, `{"account_number":"111"}`, "")
	if err != nil {
		t.Fatal(err)
	}
	v.toVersion1(t, ref, a)
	c, err := v.store.OpenOwned(ctx, a, ref)
	if err != nil || string(c.Secret) != `{"account_number":"111"}` || c.OwnerBound {
		t.Fatalf("a version-1 record before re-seal: %v %v", c, err)
	}
	// Its owner is only what the row says: checked against the pointers.
	p := newFakePointers()
	p.point(a, ref)
	if err := CheckPointers(ctx, p, nil, ref, a); err != nil {
		t.Fatal(err)
	}
	p.point(AccountOwner(kluis.NewID(kluis.PrefixAccount)), ref)
	wantCode(t, CheckPointers(ctx, p, nil, ref, a), EIntegrity)
	wantCode(t, CheckPointers(ctx, newFakePointers(), nil, ref, a), EIntegrity)
}

func TestRotationResealsVersion1RecordsAsVersion2(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	p := newFakePointers()
	type rec struct {
		ref, secret string
		owner       Owner
	}
	var recs []rec
	for i := range 3 {
		sub := v.subject(t, fmt.Sprintf("user-%d", i))
		for j, kind := range []string{KindBankAccessToken, KindAccountNumber} {
			owner := newOwner(kind)
			secret := fmt.Sprintf(`{"n":"%d-%d"}`, i, j)
			ref, err := v.trySealFor(owner, sub, kind, secret, "")
			if err != nil {
				t.Fatal(err)
			}
			v.toVersion1(t, ref, owner)
			p.point(owner, ref)
			recs = append(recs, rec{ref, secret, owner})
		}
	}
	// A record nobody points at (no owner known) stays version 1, under the
	// subject's new key, and does not make the run loop.
	orphanSub := v.subject(t, "user-orphan")
	orphan := v.seal(t, orphanSub, KindBankAccessToken, `{"n":"orphan"}`, "")
	v.toVersion1(t, orphan, Owner{})
	if n := v.count(t, `SELECT count(*) FROM credentials WHERE get_byte(envelope, 0) = 1`); n != 7 {
		t.Fatalf("%d version-1 records before rotation, want 7", n)
	}

	res, err := v.store.Rotate(ctx, v.db, RotationOptions{Owners: p})
	if err != nil {
		t.Fatal(err)
	}
	if res.ResealedSubjects != 3 || res.ResealedRecords != 6 || res.ResealFailed != 0 {
		t.Fatalf("rotation %+v, want 3 subjects and 6 records re-sealed", res)
	}
	for _, r := range recs {
		c, err := v.instance(t, CacheOptions{}).store.OpenOwned(ctx, r.owner, r.ref)
		if err != nil || string(c.Secret) != r.secret || !c.OwnerBound || c.KeyVersion != 2 {
			t.Fatalf("%s after rotation: %v %v", r.ref, c, err)
		}
		if env := v.envelope(t, r.ref); EnvelopeVersion(env) != EnvelopeV2 {
			t.Fatalf("%s is still version %d", r.ref, EnvelopeVersion(env))
		}
	}
	if n := v.count(t, `SELECT count(*) FROM keystore.subject_keys WHERE version = 1 AND subject_id <> $1`, orphanSub); n != 0 {
		t.Fatalf("%d old key versions left: a saved version-1 envelope could be put back and open", n)
	}
	// Resumable and idempotent: nothing is left to do.
	again, err := v.store.Rotate(ctx, v.db, RotationOptions{Owners: p})
	if err != nil || again.ResealedSubjects != 0 {
		t.Fatalf("a second run: %+v %v", again, err)
	}
}

func TestResealRefusesToBindAnOwnerThePointersDoNotConfirm(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	p := newFakePointers()
	victim, attacker := v.subject(t, "victim"), v.subject(t, "attacker")
	b := AccountOwner(kluis.NewID(kluis.PrefixAccount))
	refB, err := v.trySealFor(b, victim, KindAccountNumber, `{"account_number":"222"}`, "")
	if err != nil {
		t.Fatal(err)
	}
	v.toVersion1(t, refB, b)
	p.point(b, refB)
	// While B's record is unbound, a database writer renames its owner to A
	// and points A at it: binding that owner would make the lie authentic.
	a := AccountOwner(kluis.NewID(kluis.PrefixAccount))
	v.asTableOwner(t, `UPDATE credentials SET owner_id = $2 WHERE ref = $1`, refB, a.ID)
	p.point(a, refB)
	// Another subject's records are re-sealed all the same.
	good := AccountOwner(kluis.NewID(kluis.PrefixAccount))
	goodRef, err := v.trySealFor(good, attacker, KindAccountNumber, `{"account_number":"999"}`, "")
	if err != nil {
		t.Fatal(err)
	}
	v.toVersion1(t, goodRef, good)
	p.point(good, goodRef)
	before := v.envelope(t, refB)

	res, err := v.store.Rotate(ctx, v.db, RotationOptions{Owners: p})
	wantCode(t, err, EIntegrity)
	if res.ResealFailed != 1 || res.ResealedSubjects != 1 {
		t.Fatalf("rotation %+v, want one subject re-sealed and one refused", res)
	}
	if got := v.envelope(t, refB); string(got) != string(before) {
		t.Fatal("the disputed record was changed")
	}
	if c, err := v.store.OpenOwned(ctx, good, goodRef); err != nil || !c.OwnerBound {
		t.Fatalf("the other subject's record: %v %v", c, err)
	}
	// Without a pointer check, an unbound owner is not bound at all.
	_, err = v.store.ResealSubject(ctx, v.db, victim, nil)
	wantCode(t, err, kluis.EInternal)
	if got := v.envelope(t, refB); string(got) != string(before) {
		t.Fatal("the disputed record was changed")
	}
}

func TestVersion1RecordsOpenWhileTheRotationResealsThem(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	p := newFakePointers()
	type rec struct {
		ref, secret string
		owner       Owner
	}
	var recs []rec
	for i := range 20 {
		sub := v.subject(t, fmt.Sprintf("user-%d", i))
		owner := newOwner(KindAccountNumber)
		secret := fmt.Sprintf(`{"account_number":"%d"}`, i)
		ref, err := v.trySealFor(owner, sub, KindAccountNumber, secret, "")
		if err != nil {
			t.Fatal(err)
		}
		v.toVersion1(t, ref, owner)
		p.point(owner, ref)
		recs = append(recs, rec{ref, secret, owner})
	}
	stop := make(chan struct{})
	var opens, failures atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		inst := v.instance(t, CacheOptions{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				r := recs[i%len(recs)]
				c, err := inst.store.OpenOwned(ctx, r.owner, r.ref)
				if err != nil || string(c.Secret) != r.secret {
					failures.Add(1)
					t.Errorf("open of %s during the re-seal: %v", r.ref, err)
					return
				}
				c.Zero()
				opens.Add(1)
			}
		}()
	}
	res, err := v.store.Rotate(ctx, v.db, RotationOptions{Owners: p})
	close(stop)
	wg.Wait()
	if err != nil || res.ResealedRecords != len(recs) {
		t.Fatalf("rotation %+v %v", res, err)
	}
	if failures.Load() != 0 || opens.Load() == 0 {
		t.Fatalf("%d opens, %d failures", opens.Load(), failures.Load())
	}
	for _, r := range recs {
		c, err := v.store.OpenOwned(ctx, r.owner, r.ref)
		if err != nil || !c.OwnerBound {
			t.Fatalf("%s after rotation: %v %v", r.ref, c, err)
		}
	}
}
