package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
)

// subjectKeyBytes lists every stored subject key's wrapped bytes, by id.
func (v *testVault) subjectKeyBytes(t *testing.T) map[string][]byte {
	t.Helper()
	rows, err := v.db.Pool.Query(context.Background(), `SELECT id, wrapped FROM keystore.subject_keys`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var id string
		var w []byte
		if err := rows.Scan(&id, &w); err != nil {
			t.Fatal(err)
		}
		out[id] = w
	}
	return out
}

// storedKey reads one subject key's row.
func (v *testVault) storedKey(t *testing.T, subjectID string, version uint32) storedKey {
	t.Helper()
	sk := storedKey{version: version}
	if err := v.db.Pool.QueryRow(context.Background(), `SELECT wrapped, root_version, COALESCE(keyring_epoch, 0) FROM keystore.subject_keys
		WHERE subject_id = $1 AND version = $2`, subjectID, version).Scan(&sk.wrapped, &sk.rootVersion, &sk.epoch); err != nil {
		t.Fatal(err)
	}
	return sk
}

// toRootWrapped turns the subject's keys into what kluis stored before the
// hierarchy: the same key, wrapped directly by the root key.
func (v *testVault) toRootWrapped(t *testing.T, subjectID string) {
	t.Helper()
	ctx := context.Background()
	rows, err := v.db.Pool.Query(ctx, `SELECT version, wrapped, keyring_epoch FROM keystore.subject_keys WHERE subject_id = $1`, subjectID)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		version, epoch uint32
		wrapped        []byte
	}
	var keys []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.version, &r.wrapped, &r.epoch); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, r)
	}
	rows.Close()
	for _, r := range keys {
		key, err := v.ring.keyring.openSubjectKey(ctx, subjectID, r.version, r.epoch, r.wrapped)
		if err != nil {
			t.Fatal(err)
		}
		w := v.provider.wrap(providerKeyID(subjectID, r.version), key)
		clear(key)
		v.exec(t, `UPDATE keystore.subject_keys SET wrapped = $3, root_version = $4, keyring_epoch = NULL
			WHERE subject_id = $1 AND version = $2`, subjectID, r.version, w.Ciphertext, w.RootVersion)
	}
}

func TestSubjectKeysAreMadeAndOpenedWithoutAProviderCall(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	v.seal(t, v.subject(t, "warm-up"), KindBankAccessToken, `{"access_token":"w"}`, "") // loads the keyring
	before := v.provider.calls()
	refs := map[string]string{}
	for i := 0; i < 50; i++ {
		secret := fmt.Sprintf(`{"access_token":"t%d"}`, i)
		refs[v.seal(t, v.subject(t, fmt.Sprintf("user-%d", i)), KindBankAccessToken, secret, "")] = secret
	}
	if got := v.provider.calls() - before; got != 0 {
		t.Fatalf("50 new subjects made %d provider calls, want 0", got)
	}
	// A new instance, cache cold: one unwrap (its keyring key) for every
	// subject key it opens.
	other := v.unloadedInstance(t, CacheOptions{MaxKeys: 1})
	before = v.provider.calls()
	for round := 0; round < 3; round++ {
		for ref, secret := range refs {
			c, err := other.store.Open(ctx, ref)
			if err != nil || string(c.Secret) != secret {
				t.Fatalf("open %s: %v", ref, err)
			}
		}
	}
	if got := v.provider.calls() - before; got != 1 {
		t.Fatalf("150 opens over 50 subjects made %d provider calls, want 1 (the keyring key)", got)
	}
	if got := other.ring.KeyringProviderCalls(); got != 1 {
		t.Fatalf("KeyringProviderCalls = %d, want 1", got)
	}
}

func TestAWrappedSubjectKeyIsBoundToItsSubjectVersionAndEpoch(t *testing.T) {
	t.Parallel()
	kk := bytes.Repeat([]byte{7}, keySize)
	key := bytes.Repeat([]byte{9}, keySize)
	w, err := wrapSubjectKey(kk, "sub_a", 1, 1, key)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := unwrapSubjectKey(kk, "sub_a", 1, 1, w); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("round trip: %v", err)
	}
	for name, open := range map[string]func() ([]byte, error){
		"another subject":     func() ([]byte, error) { return unwrapSubjectKey(kk, "sub_b", 1, 1, w) },
		"another version":     func() ([]byte, error) { return unwrapSubjectKey(kk, "sub_a", 2, 1, w) },
		"another epoch":       func() ([]byte, error) { return unwrapSubjectKey(kk, "sub_a", 1, 2, w) },
		"another keyring key": func() ([]byte, error) { return unwrapSubjectKey(key, "sub_a", 1, 1, w) },
		"a flipped bit":       func() ([]byte, error) { b := bytes.Clone(w); b[20] ^= 1; return unwrapSubjectKey(kk, "sub_a", 1, 1, b) },
		"truncated":           func() ([]byte, error) { return unwrapSubjectKey(kk, "sub_a", 1, 1, w[:len(w)-1]) },
	} {
		if got, err := open(); err == nil || got != nil {
			t.Errorf("%s: opened", name)
		}
	}

	// In the store: a wrapped key copied to another subject's row is an
	// integrity failure, never the other subject's key.
	v := newTestVault(t, CacheOptions{})
	a, b := v.subject(t, "a"), v.subject(t, "b")
	v.seal(t, a, KindBankAccessToken, `{"access_token":"a"}`, "")
	refB := v.seal(t, b, KindBankAccessToken, `{"access_token":"b"}`, "")
	v.exec(t, `UPDATE keystore.subject_keys SET wrapped = (SELECT wrapped FROM keystore.subject_keys WHERE subject_id = $1) WHERE subject_id = $2`, a, b)
	_, err = v.store.Open(context.Background(), refB)
	wantCode(t, err, EIntegrity)
}

func FuzzUnwrapSubjectKey(f *testing.F) {
	kk := bytes.Repeat([]byte{7}, keySize)
	w, err := wrapSubjectKey(kk, "sub_a", 1, 1, bytes.Repeat([]byte{9}, keySize))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(w)
	f.Add([]byte{})
	f.Add([]byte{subjectKeyWrapVersion})
	f.Add(append([]byte{0x02}, w[1:]...))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := unwrapSubjectKey(kk, "sub_a", 1, 1, data)
		if err == nil && (!bytes.Equal(data, w) || len(key) != keySize) {
			t.Fatalf("opened bytes that are not the wrapped key: %x", data)
		}
		if err != nil && !errors.Is(err, ErrMalformedEnvelope) && !errors.Is(err, ErrEnvelopeAuth) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}

// Issue 13: the keyring key is used at most KeyringRecheck without the
// provider confirming it; past that, opens and seals are 503 and write
// nothing, Ready fails, and all of it recovers once the provider is back.
func TestAKeyringKeyPastItsRecheckStopsWorkUntilTheProviderConfirmsIt(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	v := newTestVault(t, CacheOptions{Clock: clock, KeyringRecheck: time.Minute})
	ctx := context.Background()
	sub := v.subject(t, "user-1")
	ref := v.seal(t, sub, KindBankAccessToken, `{"access_token":"t"}`, "")
	if err := v.ring.Ready(ctx); err != nil {
		t.Fatal(err)
	}

	// The provider goes away: within the bound, kluis serves on.
	v.provider.unavailable.Store(true)
	clock.Advance(50 * time.Second)
	v.ring.keyring.tick(ctx) // the recheck fails; the key is still within its bound
	if _, err := v.store.Open(ctx, ref); err != nil {
		t.Fatalf("open within the bound: %v", err)
	}
	if err := v.ring.Ready(ctx); err != nil {
		t.Fatalf("ready within the bound: %v", err)
	}

	// Past the bound: 503, nothing written, not ready, and the key zeroed.
	clock.Advance(11 * time.Second)
	v.ring.keyring.mu.RLock()
	held := v.ring.keyring.keys[1].key
	v.ring.keyring.mu.RUnlock()
	v.ring.keyring.tick(ctx)
	if !bytes.Equal(held, make([]byte, keySize)) {
		t.Fatal("the keyring key past its bound was not zeroed")
	}
	_, err := v.store.Open(ctx, ref)
	wantCode(t, err, kluis.EUnavailable)
	keysBefore := v.count(t, `SELECT count(*) FROM keystore.subject_keys`)
	_, err = v.trySeal(v.subject(t, "user-2"), KindBankAccessToken, `{"access_token":"new"}`, "")
	wantCode(t, err, kluis.EUnavailable)
	if v.count(t, `SELECT count(*) FROM keystore.subject_keys`) != keysBefore || v.count(t, `SELECT count(*) FROM credentials`) != 1 {
		t.Fatal("a seal without a confirmed keyring key wrote something")
	}
	wantCode(t, v.ring.Ready(ctx), kluis.EUnavailable)

	// A provider that answers and refuses (root key disabled) is no better.
	v.provider.unavailable.Store(false)
	v.provider.refuse.Store(true)
	clock.Advance(2 * time.Second)
	v.ring.keyring.tick(ctx)
	wantCode(t, v.ring.Ready(ctx), kluis.EUnavailable)

	// The provider is back: the next tick (a second) confirms the key.
	v.provider.refuse.Store(false)
	clock.Advance(2 * time.Second)
	v.ring.keyring.tick(ctx)
	if err := v.ring.Ready(ctx); err != nil {
		t.Fatalf("ready after the provider's return: %v", err)
	}
	if c, err := v.store.Open(ctx, ref); err != nil || string(c.Secret) != `{"access_token":"t"}` {
		t.Fatalf("open after the provider's return: %v", err)
	}
}

func TestRootWrappedKeysOpenMigrateIntoTheHierarchyAndStillOpen(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	refs := map[string]string{}
	var subjects []string
	for i := 0; i < 7; i++ {
		sub := v.subject(t, fmt.Sprintf("old-%d", i))
		subjects = append(subjects, sub)
		secret := fmt.Sprintf(`{"access_token":"old%d"}`, i)
		refs[v.seal(t, sub, KindBankAccessToken, secret, "")] = secret
	}
	for _, sub := range subjects[:5] {
		v.toRootWrapped(t, sub)
	}
	openAll := func(s *Store) {
		t.Helper()
		for ref, secret := range refs {
			c, err := s.Open(ctx, ref)
			if err != nil || string(c.Secret) != secret {
				t.Fatalf("open %s: %v", ref, err)
			}
		}
	}
	// Old-format keys open (through the provider), and a new record for
	// such a subject is sealed under its old key.
	openAll(v.instance(t, CacheOptions{}).store)
	extra := v.seal(t, subjects[0], KindBankAccessToken, `{"access_token":"extra"}`, "")
	refs[extra] = `{"access_token":"extra"}`

	// Reveals go on while the rotation migrates them.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var opened atomic.Int64
	reader := v.instance(t, CacheOptions{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for ref, secret := range refs {
					c, err := reader.store.Open(ctx, ref)
					if err != nil || string(c.Secret) != secret {
						t.Errorf("open %s during migration: %v", ref, err)
						return
					}
					opened.Add(1)
				}
			}
		}()
	}
	res, err := v.store.Rotate(ctx, v.db, RotationOptions{Batch: 2})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if res.Migrated != 5 || res.Rewrapped != 5 || res.Remaining != 0 {
		t.Fatalf("rotation = %+v, want the 5 root-wrapped keys migrated", res)
	}
	if n := v.count(t, `SELECT count(*) FROM keystore.subject_keys WHERE keyring_epoch IS NULL`); n != 0 {
		t.Fatalf("%d keys still wrapped by the root", n)
	}
	// Still open, and on a fresh instance without a provider call beyond
	// its keyring key.
	fresh := v.unloadedInstance(t, CacheOptions{})
	before := v.provider.unwraps.Load()
	openAll(fresh.store)
	if got := v.provider.unwraps.Load() - before; got != 1 {
		t.Fatalf("opening migrated keys made %d unwraps, want 1", got)
	}
}

func TestANewEpochRewrapsLocallyResumesAfterAKillAndRetiresTheOld(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	refs := map[string]string{}
	for i := 0; i < 23; i++ {
		secret := fmt.Sprintf(`{"access_token":"e%d"}`, i)
		refs[v.seal(t, v.subject(t, fmt.Sprintf("user-%d", i)), KindBankAccessToken, secret, "")] = secret
	}
	before := v.provider.calls()
	killed, kill := context.WithCancel(ctx)
	opts := RotationOptions{NewEpoch: true, Batch: 4, Report: func(r RotationResult) {
		if r.Step == StepRewrap && r.Rewrapped >= 8 {
			kill()
		}
	}}
	first, err := v.store.Rotate(killed, v.db, opts)
	if err == nil {
		t.Fatal("the killed run reported success")
	}
	if first.Epoch != 2 || !first.NewEpoch || first.Rewrapped != 8 {
		t.Fatalf("killed run = %+v, want epoch 2 started and 8 keys moved", first)
	}
	opts.NewEpoch, opts.Report = false, nil
	second, err := v.store.Rotate(ctx, v.db, opts)
	if err != nil {
		t.Fatal(err)
	}
	if second.Epoch != 2 || second.NewEpoch || second.Rewrapped != 23-8 || second.EpochsRetired != 1 {
		t.Fatalf("second run = %+v, want the other %d keys moved and epoch 1 retired", second, 23-8)
	}
	// Provider calls for the whole epoch change: the new keyring key made,
	// unwrapped (twice: once per run) and the retire's refresh; the
	// DescribeKey of each run is not counted by the fake.
	if got := v.provider.calls() - before; got > 8 {
		t.Fatalf("a new epoch over 23 keys made %d provider calls", got)
	}
	if n := v.count(t, `SELECT count(*) FROM keystore.keyring_keys`); n != 1 {
		t.Fatalf("%d keyring keys, want only the active one", n)
	}
	for ref, secret := range refs {
		c, err := v.instance(t, CacheOptions{}).store.Open(ctx, ref)
		if err != nil || string(c.Secret) != secret {
			t.Fatalf("open %s after the new epoch: %v", ref, err)
		}
	}
	third, err := v.store.Rotate(ctx, v.db, opts)
	if err != nil || third.Rewrapped != 0 || third.NewEpoch {
		t.Fatalf("a run with nothing due = %+v, %v", third, err)
	}
}

func TestAKeyThatWillNotOpenIsRecordedAndTheRestMove(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	var subjects []string
	for i := 0; i < 5; i++ {
		sub := v.subject(t, fmt.Sprintf("user-%d", i))
		subjects = append(subjects, sub)
		v.seal(t, sub, KindBankAccessToken, `{"access_token":"x"}`, "")
	}
	bad := subjects[0] // lowest id or not, it must not hold up the others
	v.exec(t, `UPDATE keystore.subject_keys SET wrapped = set_byte(wrapped, 20, get_byte(wrapped, 20) # 1) WHERE subject_id = $1`, bad)

	res, err := v.store.Rotate(ctx, v.db, RotationOptions{NewEpoch: true, Batch: 2})
	if err == nil {
		t.Fatal("a run with a failed key reported success")
	}
	if res.Rewrapped != 4 || res.RewrapFailed != 1 {
		t.Fatalf("rotation = %+v, want 4 moved and 1 failed", res)
	}
	var reason string
	var attempts int
	read := func() {
		t.Helper()
		if err := v.db.Pool.QueryRow(ctx, `SELECT reason, attempts FROM keystore.rotation_failures WHERE subject_id = $1 AND step = 'rewrap'`, bad).Scan(&reason, &attempts); err != nil {
			t.Fatal(err)
		}
	}
	read()
	if attempts != 1 || reason == "" {
		t.Fatalf("failure recorded as %q, %d attempts", reason, attempts)
	}
	// The next run retries only it, and counts the attempt.
	res, err = v.store.Rotate(ctx, v.db, RotationOptions{})
	if err == nil || res.Rewrapped != 0 || res.RewrapFailed != 1 {
		t.Fatalf("second run = %+v, %v", res, err)
	}
	read()
	if attempts != 2 {
		t.Fatalf("attempts = %d, want 2", attempts)
	}
	// Erasing the subject takes its failure record with it.
	err = v.db.InTx(ctx, func(tx pgx.Tx) error { _, err := v.ring.DestroySubjectKeys(ctx, tx, bad); return err })
	if err != nil {
		t.Fatal(err)
	}
	if n := v.count(t, `SELECT count(*) FROM keystore.rotation_failures`); n != 0 {
		t.Fatalf("%d failure records left after erasure", n)
	}
}

// Two instances rotating at once, while reveals and new subjects go on:
// every key moves exactly once and none is lost.
func TestTwoInstancesRotatingAtOnceMoveEveryKeyOnce(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	refs := map[string]string{}
	for i := 0; i < 60; i++ {
		secret := fmt.Sprintf(`{"access_token":"c%d"}`, i)
		refs[v.seal(t, v.subject(t, fmt.Sprintf("user-%d", i)), KindBankAccessToken, secret, "")] = secret
	}
	for _, sub := range []string{"user-1", "user-2", "user-3"} {
		v.toRootWrapped(t, v.subject(t, sub))
	}
	// Epoch 1 is past its cryptoperiod: both runs find a new epoch due.
	v.exec(t, `UPDATE keystore.keyring_keys SET created_at = now() - interval '100 days'`)
	keys := v.count(t, `SELECT count(*) FROM keystore.subject_keys`)
	var start time.Time
	if err := v.db.Pool.QueryRow(ctx, `SELECT now()`).Scan(&start); err != nil {
		t.Fatal(err)
	}

	a, b := v.instance(t, CacheOptions{}), v.instance(t, CacheOptions{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				for ref, secret := range refs {
					if c, err := a.store.Open(ctx, ref); err != nil || string(c.Secret) != secret {
						t.Errorf("open %s during rotation: %v", ref, err)
						return
					}
					break
				}
				sub, err := EnsureSubject(ctx, v.db.Pool, fmt.Sprintf("new-%d-%d", g, i))
				if err != nil {
					t.Errorf("new subject: %v", err)
					return
				}
				if _, err := b.trySeal(sub, KindBankAccessToken, `{"access_token":"n"}`, ""); err != nil {
					t.Errorf("seal during rotation: %v", err)
					return
				}
			}
		}(g)
	}
	results := make([]RotationResult, 4)
	errs := make([]error, 4)
	var runs sync.WaitGroup
	for i := range results {
		inst := a
		if i%2 == 1 {
			inst = b
		}
		runs.Add(1)
		go func() {
			defer runs.Done()
			results[i], errs[i] = inst.store.Rotate(ctx, v.db, RotationOptions{Batch: 3})
		}()
	}
	runs.Wait()
	close(stop)
	wg.Wait()
	moved, migrated := 0, 0
	for i, err := range errs {
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		moved += results[i].Rewrapped
		migrated += results[i].Migrated
	}
	if n := v.count(t, `SELECT count(*) FROM keystore.keyring_keys WHERE epoch = 2`); n != 1 || v.count(t, `SELECT max(epoch) FROM keystore.keyring_keys`) != 2 {
		t.Fatal("concurrent runs did not agree on one new epoch")
	}
	// Every key that existed before the runs moved, each exactly once: a
	// moved key's wrapped_at is later than its created_at, and the runs'
	// counts add up to exactly those (keys made during the runs by an
	// instance still on epoch 1 may be among them, or left for the next run).
	if n := v.count(t, `SELECT count(*) FROM keystore.subject_keys WHERE created_at < $1 AND keyring_epoch IS DISTINCT FROM 2`, start); n != 0 {
		t.Fatalf("%d of the %d keys that existed before the runs were not moved", n, keys)
	}
	if n := v.count(t, `SELECT count(*) FROM keystore.subject_keys WHERE keyring_epoch = 2 AND wrapped_at > created_at`); moved != n || migrated != 3 {
		t.Fatalf("runs counted %d moves (%d migrated), but %d keys moved (3 migrated)", moved, migrated, n)
	}
	left := v.count(t, `SELECT count(*) FROM keystore.subject_keys WHERE keyring_epoch IS DISTINCT FROM 2`)
	if _, err := v.store.Rotate(ctx, v.db, RotationOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := v.count(t, `SELECT count(*) FROM keystore.subject_keys WHERE keyring_epoch IS DISTINCT FROM 2`); n != 0 {
		t.Fatalf("%d keys (of %d left by the concurrent runs) not under epoch 2 after another run", n, left)
	}
	for ref, secret := range refs {
		if c, err := v.instance(t, CacheOptions{}).store.Open(ctx, ref); err != nil || string(c.Secret) != secret {
			t.Fatalf("open %s after the rotations: %v", ref, err)
		}
	}
}

func TestSeedMakesSubjectsKeysAndRecordsThatOpenWithoutAProviderCall(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	recs := make([]SeedRecord, 500)
	for i := range recs {
		recs[i] = SeedRecord{ExternalID: fmt.Sprintf("seeded-%d", i), Kind: KindAccountNumber,
			Owner: newOwner(KindAccountNumber), Secret: []byte(fmt.Sprintf(`{"account_number":"%010d"}`, i)), BlindIndexInput: fmt.Sprintf("%010d", i)}
	}
	before := v.provider.calls()
	seeded, err := v.store.Seed(ctx, recs)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range seeded {
		c, err := v.store.Open(ctx, s.Ref)
		if err != nil || string(c.Secret) != string(recs[i].Secret) || c.SubjectID != s.SubjectID || c.Owner != recs[i].Owner {
			t.Fatalf("seeded record %d: %v", i, err)
		}
	}
	if got := v.provider.calls() - before; got != 0 {
		t.Fatalf("seeding and opening 500 records made %d provider calls", got)
	}
	found, err := v.store.FindByBlindIndex(ctx, v.db.Pool, KindAccountNumber, "0000000042")
	if err != nil || len(found) != 1 || found[0].Ref != seeded[42].Ref {
		t.Fatalf("blind index of a seeded number: %v %v", found, err)
	}
}
