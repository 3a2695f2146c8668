package vault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// testVault is a credential store over a fresh database and a fake provider.
type testVault struct {
	db       *postgres.DB
	dbURL    string // the serving role's URL (pgtest.OwnerURL gives the owner's)
	provider *fakeProvider
	ring     *KeyRing
	sys      *SystemKeys
	store    *Store
}

func newTestVault(t *testing.T, opts CacheOptions) *testVault {
	t.Helper()
	db, dbURL := pgtest.Open(t)
	p := newFakeProvider()
	sys, err := LoadSystemKeys(context.Background(), db, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sys.Close)
	ring := NewKeyRing(p, opts)
	t.Cleanup(ring.Purge)
	v := &testVault{db: db, dbURL: dbURL, provider: p, ring: ring, sys: sys, store: NewStore(db, ring, sys, testKinds)}
	v.loadKeyring(t)
	return v
}

// loadKeyring loads the keyring keys as `kluis serve` does at start, before
// any transaction needs them.
func (v *testVault) loadKeyring(t *testing.T) {
	t.Helper()
	if err := v.ring.LoadKeyring(context.Background(), v.db.Aside()); err != nil {
		t.Fatal(err)
	}
}

// instance returns a second kluis instance on the same database and
// provider: its own key ring and cache.
func (v *testVault) instance(t *testing.T, opts CacheOptions) *testVault {
	t.Helper()
	other := v.unloadedInstance(t, opts)
	other.loadKeyring(t)
	return other
}

// unloadedInstance is an instance that has not loaded its keyring keys yet:
// its first use loads them.
func (v *testVault) unloadedInstance(t *testing.T, opts CacheOptions) *testVault {
	t.Helper()
	ring := NewKeyRing(v.provider, opts)
	t.Cleanup(ring.Purge)
	return &testVault{db: v.db, dbURL: v.dbURL, provider: v.provider, ring: ring, sys: v.sys, store: NewStore(v.db, ring, v.sys, testKinds)}
}

func (v *testVault) subject(t *testing.T, externalID string) string {
	t.Helper()
	id, err := EnsureSubject(context.Background(), v.db.Pool, externalID)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// newOwner is a fresh owner of the type that kind belongs to.
func newOwner(kind string) Owner {
	if OwnerTypeOf(kind) == OwnerAccount {
		return AccountOwner(kluis.NewID(kluis.PrefixAccount))
	}
	return ItemOwner(kluis.NewID(kluis.PrefixItem))
}

func (v *testVault) trySeal(subjectID, kind, secret, blindIndexInput string) (string, error) {
	return v.trySealFor(newOwner(kind), subjectID, kind, secret, blindIndexInput)
}

func (v *testVault) trySealFor(owner Owner, subjectID, kind, secret, blindIndexInput string) (string, error) {
	var ref string
	err := v.db.InTx(context.Background(), func(tx pgx.Tx) error {
		var err error
		ref, err = v.store.Seal(context.Background(), tx, owner, subjectID, kind, []byte(secret), blindIndexInput)
		return err
	})
	return ref, err
}

func (v *testVault) seal(t *testing.T, subjectID, kind, secret, blindIndexInput string) string {
	t.Helper()
	ref, err := v.trySeal(subjectID, kind, secret, blindIndexInput)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func (v *testVault) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := v.db.Pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatal(err)
	}
}

func (v *testVault) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := v.db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (v *testVault) envelope(t *testing.T, ref string) []byte {
	t.Helper()
	var env []byte
	if err := v.db.Pool.QueryRow(context.Background(), `SELECT envelope FROM credentials WHERE ref = $1`, ref).Scan(&env); err != nil {
		t.Fatal(err)
	}
	return env
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := kluis.ErrorCode(err); got != code {
		t.Fatalf("got %q (%v), want %q", got, err, code)
	}
}

func providerCalls(p *fakeProvider) int64 { return p.generates.Load() + p.unwraps.Load() }

func TestSealedCredentialOpens(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	sub := v.subject(t, "user-1")
	secret := `{"access_token":"access-sandbox-1","provider":"sandbox"}`
	ref := v.seal(t, sub, KindBankAccessToken, secret, "")
	if !kluis.ValidID(kluis.PrefixCredential, ref) {
		t.Fatalf("ref %q is not a credential id", ref)
	}
	// Another instance, with a cold cache, opens it through the provider.
	c, err := v.instance(t, CacheOptions{}).store.Open(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Secret) != secret || c.Kind != KindBankAccessToken || c.SubjectID != sub || c.Ref != ref || c.KeyVersion != 1 {
		t.Fatalf("got %v %q", c, c.Secret)
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(format, c); strings.Contains(s, "access-sandbox-1") {
			t.Fatalf("%s shows the secret: %s", format, s)
		}
	}
	c.Zero()
	if !isZero(c.Secret) {
		t.Fatal("Zero left the secret")
	}
}

func TestAnUnknownRefIsNotFound(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	for _, ref := range []string{kluis.NewID(kluis.PrefixCredential), "cred_nope", "'; DROP TABLE credentials; --"} {
		_, err := v.store.Open(context.Background(), ref)
		wantCode(t, err, kluis.ENotFound)
	}
}

func TestARecordMovedToAnotherRowOrSubjectFailsToOpen(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	alice, bob := v.subject(t, "alice"), v.subject(t, "bob")
	aliceRef := v.seal(t, alice, KindBankAccessToken, `{"access_token":"alice-token"}`, "")
	aliceOther := v.seal(t, alice, KindBankAccessToken, `{"access_token":"alice-other"}`, "")
	aliceAcct := v.seal(t, alice, KindAccountNumber, `{"account_number":"123"}`, "")
	bobRef := v.seal(t, bob, KindBankAccessToken, `{"access_token":"bob-token"}`, "")
	tests := []struct {
		name   string
		target string
		move   string
	}{
		{"the envelope copied to another row of the same subject", aliceOther, `UPDATE credentials SET envelope = (SELECT envelope FROM credentials WHERE ref = $1) WHERE ref = $2`},
		{"the envelope copied to another subject's row", bobRef, `UPDATE credentials SET envelope = (SELECT envelope FROM credentials WHERE ref = $1) WHERE ref = $2`},
		{"the envelope copied to a row of another kind", aliceAcct, `UPDATE credentials SET envelope = (SELECT envelope FROM credentials WHERE ref = $1) WHERE ref = $2`},
		{"the row handed to another subject", aliceRef, `UPDATE credentials SET subject_id = (SELECT subject_id FROM credentials WHERE ref = $1) WHERE ref = $2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := aliceRef
			if tt.target == aliceRef {
				src = bobRef
			}
			v.exec(t, tt.move, src, tt.target)
			_, err := v.store.Open(context.Background(), tt.target)
			wantCode(t, err, EIntegrity)
			if !errors.Is(err, ErrEnvelopeAuth) {
				t.Fatalf("got %v, want ErrEnvelopeAuth in the chain", err)
			}
		})
	}
}

func TestOneFlippedByteAnywhereInTheStoredRecordFailsToOpen(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	sub := v.subject(t, "user-1")
	ref := v.seal(t, sub, KindBankAccessToken, `{"access_token":"t"}`, "")
	env := v.envelope(t, ref)
	for i := range env {
		bad := bytes.Clone(env)
		bad[i] ^= 0x01
		v.exec(t, `UPDATE credentials SET envelope = $1 WHERE ref = $2`, bad, ref)
		if _, err := v.store.Open(context.Background(), ref); err == nil {
			t.Fatalf("flipping byte %d still opened", i)
		}
	}
	v.exec(t, `UPDATE credentials SET envelope = $1 WHERE ref = $2`, env, ref)
	if _, err := v.store.Open(context.Background(), ref); err != nil {
		t.Fatalf("the restored record does not open: %v", err)
	}
}

func TestAFlippedByteInTheWrappedKeyFailsToOpen(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	sub := v.subject(t, "user-1")
	ref := v.seal(t, sub, KindBankAccessToken, `{"access_token":"t"}`, "")
	v.exec(t, `UPDATE keystore.subject_keys SET wrapped = set_byte(wrapped, 20, get_byte(wrapped, 20) # 1) WHERE subject_id = $1`, sub)
	_, err := v.store.Open(context.Background(), ref)
	wantCode(t, err, EIntegrity) // wrapped by a keyring key: the local AEAD says no
	if !errors.Is(err, ErrEnvelopeAuth) {
		t.Fatalf("got %v, want the failed authentication in the chain", err)
	}
	// A key from before the hierarchy: the provider refuses it.
	sub2 := v.subject(t, "user-2")
	ref2 := v.seal(t, sub2, KindBankAccessToken, `{"access_token":"t"}`, "")
	v.toRootWrapped(t, sub2)
	v.exec(t, `UPDATE keystore.subject_keys SET wrapped = set_byte(wrapped, 20, get_byte(wrapped, 20) # 1) WHERE subject_id = $1`, sub2)
	_, err = v.store.Open(context.Background(), ref2)
	wantCode(t, err, kluis.EInternal)
	if !errors.Is(err, ErrKeyRefused) {
		t.Fatalf("got %v, want the provider's refusal in the chain", err)
	}
}

func TestTheSameSecretSealedTwiceIsStoredAsDifferentBytes(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	sub := v.subject(t, "user-1")
	a := v.seal(t, sub, KindBankAccessToken, `{"access_token":"same"}`, "")
	b := v.seal(t, sub, KindBankAccessToken, `{"access_token":"same"}`, "")
	if bytes.Equal(v.envelope(t, a), v.envelope(t, b)) {
		t.Fatal("two seals of one secret were stored as the same bytes")
	}
}

func TestOpensInSteadyStateBarelyCallTheProvider(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	sub := v.subject(t, "user-1")
	refs := make([]string, 10)
	for i := range refs {
		refs[i] = v.seal(t, sub, KindBankAccessToken, fmt.Sprintf(`{"access_token":"t%d"}`, i), "")
	}
	// A fresh instance, so the count includes the first unwrap.
	other := v.instance(t, CacheOptions{})
	before := providerCalls(v.provider)
	for i := 0; i < 1000; i++ {
		if _, err := other.store.Open(context.Background(), refs[i%len(refs)]); err != nil {
			t.Fatal(err)
		}
	}
	if calls := providerCalls(v.provider) - before; calls > 10 {
		t.Fatalf("%d provider calls for 1,000 opens, want at most 10", calls)
	}
	// Sealing on the first instance reuses the key it created.
	before = providerCalls(v.provider)
	for i := 0; i < 100; i++ {
		v.seal(t, sub, KindBankAccessToken, `{"access_token":"more"}`, "")
	}
	if calls := providerCalls(v.provider) - before; calls != 0 {
		t.Fatalf("%d provider calls for 100 seals with a warm cache, want 0", calls)
	}
}

func TestConcurrentOpensOnAColdCacheMakeOneProviderCall(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	sub := v.subject(t, "user-1")
	ref := v.seal(t, sub, KindBankAccessToken, `{"access_token":"t"}`, "")
	v.toRootWrapped(t, sub) // the cache serves keys from before the hierarchy
	other := v.instance(t, CacheOptions{})
	gate := make(chan struct{})
	v.provider.gate.Store(&gate)
	before := v.provider.unwraps.Load()

	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := other.store.Open(context.Background(), ref)
			if err == nil && string(c.Secret) != `{"access_token":"t"}` {
				err = errors.New("wrong secret")
			}
			errs <- err
		}()
	}
	var wrapped []byte
	if err := v.db.Pool.QueryRow(context.Background(), `SELECT wrapped FROM keystore.subject_keys WHERE subject_id = $1`, sub).Scan(&wrapped); err != nil {
		t.Fatal(err)
	}
	waitForWaiters(t, other.ring.cache, flightKey{cacheKey{sub, 1}, string(wrapped)}, n)
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if calls := v.provider.unwraps.Load() - before; calls != 1 {
		t.Fatalf("%d unwraps for %d concurrent opens, want 1", calls, n)
	}
}

func TestAnUnavailableProviderFailsClosedAndStoresNothing(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	sub := v.subject(t, "user-1")
	v.provider.unavailable.Store(true)
	// An instance that could not load its keyring key stores nothing.
	cold := v.unloadedInstance(t, CacheOptions{})
	_, err := cold.trySeal(sub, KindBankAccessToken, `{"access_token":"t"}`, "")
	wantCode(t, err, kluis.EUnavailable)
	if !errors.Is(err, kluis.ErrUnavailable) || !errors.Is(err, ErrKeyUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable and ErrKeyUnavailable in the chain", err)
	}
	if strings.Contains(err.Error(), "access_token") {
		t.Fatal("the error shows the secret")
	}
	if n := v.count(t, `SELECT (SELECT count(*) FROM credentials) + (SELECT count(*) FROM keystore.subject_keys)`); n != 0 {
		t.Fatalf("%d rows stored", n)
	}

	// A record sealed while it was up cannot be opened on such an instance.
	v.provider.unavailable.Store(false)
	ref := v.seal(t, sub, KindBankAccessToken, `{"access_token":"t"}`, "")
	v.provider.unavailable.Store(true)
	_, err = v.unloadedInstance(t, CacheOptions{}).store.Open(context.Background(), ref)
	wantCode(t, err, kluis.EUnavailable)
}

// A provider that refuses the keyring key (root key disabled) leaves kluis
// unable to serve until it confirms it (503); one that refuses a subject key
// wrapped by the root (from before the hierarchy) is an internal error.
func TestARefusingProviderIsUnavailableForTheKeyringAndInternalForARootWrappedKey(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	sub := v.subject(t, "user-1")
	ref := v.seal(t, sub, KindBankAccessToken, `{"access_token":"t"}`, "")
	v.toRootWrapped(t, sub)
	v.provider.refuse.Store(true)
	_, err := v.unloadedInstance(t, CacheOptions{}).trySeal(v.subject(t, "user-2"), KindBankAccessToken, `{"access_token":"t"}`, "")
	wantCode(t, err, kluis.EUnavailable)
	_, err = v.store.Open(context.Background(), ref)
	wantCode(t, err, kluis.EInternal)
}

func TestSealRefusesBadArguments(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	sub := v.subject(t, "user-1")
	tests := []struct {
		name, subject, kind, secret, blind string
		code                               string
	}{
		{"an unknown kind", sub, "password", `{}`, "", kluis.EInvalid},
		{"an empty secret", sub, KindBankAccessToken, "", "", kluis.EInvalid},
		{"a malformed subject id", "user-1", KindBankAccessToken, `{}`, "", kluis.EInvalid},
		{"a subject that does not exist", kluis.NewID(PrefixSubject), KindBankAccessToken, `{}`, "", kluis.EInvalid},
		{"an account number with no digits", sub, KindAccountNumber, `{}`, "abc", kluis.EInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.trySeal(tt.subject, tt.kind, tt.secret, tt.blind)
			wantCode(t, err, tt.code)
		})
	}
}

func TestTwoInstancesSealingAtOnceMakeOneFirstKey(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	sub := v.subject(t, "user-1")
	instances := []*testVault{v, v.instance(t, CacheOptions{}), v.instance(t, CacheOptions{}), v.instance(t, CacheOptions{})}
	refs := make([]string, len(instances))
	errs := make([]error, len(instances))
	var wg sync.WaitGroup
	for i, inst := range instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			refs[i], errs[i] = inst.trySeal(sub, KindBankAccessToken, fmt.Sprintf(`{"access_token":"t%d"}`, i), "")
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := v.count(t, `SELECT count(*) FROM keystore.subject_keys WHERE subject_id = $1`, sub); n != 1 {
		t.Fatalf("%d subject keys, want 1", n)
	}
	for i, ref := range refs {
		c, err := v.instance(t, CacheOptions{}).store.Open(context.Background(), ref)
		if err != nil || string(c.Secret) != fmt.Sprintf(`{"access_token":"t%d"}`, i) {
			t.Fatalf("record %d: %v", i, err)
		}
	}
}

func TestAKeyCreatedInARolledBackTransactionIsNeverUsed(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	sub := v.subject(t, "user-1")
	rollback := errors.New("roll back")
	err := v.db.InTx(context.Background(), func(tx pgx.Tx) error {
		if _, err := v.store.Seal(context.Background(), tx, newOwner(KindBankAccessToken), sub, KindBankAccessToken, []byte(`{"access_token":"gone"}`), ""); err != nil {
			return err
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatalf("got %v", err)
	}
	// The cache still holds the rolled-back key; the next seal must make and
	// use a new one, so that the record opens anywhere.
	ref := v.seal(t, sub, KindBankAccessToken, `{"access_token":"kept"}`, "")
	c, err := v.instance(t, CacheOptions{}).store.Open(context.Background(), ref)
	if err != nil || string(c.Secret) != `{"access_token":"kept"}` {
		t.Fatalf("the record does not open on another instance: %v", err)
	}
	if _, err := v.store.Open(context.Background(), ref); err != nil {
		t.Fatalf("the record does not open on this instance: %v", err)
	}
}

func TestDestroyedSubjectKeysShredTheSubjectsRecords(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	alice, bob := v.subject(t, "alice"), v.subject(t, "bob")
	aliceRef := v.seal(t, alice, KindBankAccessToken, `{"access_token":"a"}`, "")
	bobRef := v.seal(t, bob, KindBankAccessToken, `{"access_token":"b"}`, "")
	// Keys from before the hierarchy, so that the cache holds them.
	v.toRootWrapped(t, alice)
	v.toRootWrapped(t, bob)
	for _, ref := range []string{aliceRef, bobRef} {
		if _, err := v.store.Open(context.Background(), ref); err != nil {
			t.Fatal(err)
		}
	}
	other := v.instance(t, CacheOptions{})
	if _, err := other.store.Open(context.Background(), aliceRef); err != nil {
		t.Fatal(err) // warms the other instance's cache
	}
	var destroyed int
	err := v.db.InTx(context.Background(), func(tx pgx.Tx) error {
		var err error
		destroyed, err = v.ring.DestroySubjectKeys(context.Background(), tx, alice)
		return err
	})
	if err != nil || destroyed != 1 {
		t.Fatalf("destroyed %d: %v", destroyed, err)
	}
	for name, s := range map[string]*Store{"this instance": v.store, "an instance with the key cached": other.store} {
		_, err := s.Open(context.Background(), aliceRef)
		if kluis.ErrorCode(err) != kluis.ENotFound {
			t.Fatalf("%s: got %v, want not found", name, err)
		}
	}
	if s := v.ring.Stats(); s.Cached != 1 {
		t.Fatalf("%d keys cached here, want only bob's", s.Cached)
	}
	if _, err := v.store.Open(context.Background(), bobRef); err != nil {
		t.Fatalf("another subject's record was shredded too: %v", err)
	}
}

func TestDestroyDeletesOneCredential(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	sub := v.subject(t, "user-1")
	ref := v.seal(t, sub, KindBankAccessToken, `{"access_token":"t"}`, "")
	destroy := func() error {
		return v.db.InTx(context.Background(), func(tx pgx.Tx) error { return v.store.Destroy(context.Background(), tx, ref) })
	}
	if err := destroy(); err != nil {
		t.Fatal(err)
	}
	_, err := v.store.Open(context.Background(), ref)
	wantCode(t, err, kluis.ENotFound)
	wantCode(t, destroy(), kluis.ENotFound)
}

func TestBlindIndexFindsAnAccountNumberWithoutDecrypting(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	alice, bob := v.subject(t, "alice"), v.subject(t, "bob")
	a := v.seal(t, alice, KindAccountNumber, `{"account_number":"0001234567","routing_number":"011000015"}`, "0001234567")
	b := v.seal(t, bob, KindAccountNumber, `{"account_number":"0001234567","routing_number":"011000015"}`, "000 123-4567")
	v.seal(t, bob, KindAccountNumber, `{"account_number":"999"}`, "999")
	before := providerCalls(v.provider)
	found, err := v.store.FindByBlindIndex(context.Background(), v.db.Pool, KindAccountNumber, " 0001 2345 67 ")
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 2 || found[0].Ref != a || found[1].Ref != b || found[0].SubjectID != alice || found[1].SubjectID != bob {
		t.Fatalf("found %+v, want %s and %s", found, a, b)
	}
	if providerCalls(v.provider) != before {
		t.Fatal("a blind-index lookup called the key provider")
	}
	none, err := v.store.FindByBlindIndex(context.Background(), v.db.Pool, KindAccountNumber, "1234567")
	if err != nil || len(none) != 0 {
		t.Fatalf("another number found %v (%v)", none, err)
	}
	// The index is keyed: not a plain hash of the digits.
	var idx []byte
	if err := v.db.Pool.QueryRow(context.Background(), `SELECT blind_index FROM credentials WHERE ref = $1`, a).Scan(&idx); err != nil {
		t.Fatal(err)
	}
	plain := sha256.Sum256([]byte("0001234567"))
	if len(idx) != 32 || bytes.Equal(idx, plain[:]) {
		t.Fatal("the blind index is missing or a plain hash")
	}
}

func TestACanarySecretNeverReachesTheDatabaseInTheClear(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	const canaryToken = "access-canary-5f0c2b7e9d1a"
	const canaryAccount = "4111999988887777"
	sub := v.subject(t, "canary-user")
	v.seal(t, sub, KindBankAccessToken, `{"access_token":"`+canaryToken+`","provider":"sandbox"}`, "")
	ref := v.seal(t, sub, KindAccountNumber, `{"account_number":"`+canaryAccount+`","routing_number":"011000015"}`, canaryAccount)

	// The scan works: it finds what is there in the clear, in text and in
	// bytea columns.
	if n := v.tablesContaining(t, "canary-user"); n == 0 {
		t.Fatal("the scan did not find the external id in subjects")
	}
	if n := v.tablesContaining(t, string(v.envelope(t, ref)[5:17])); n == 0 {
		t.Fatal("the scan did not find an envelope's nonce in credentials")
	}
	for _, canary := range []string{canaryToken, canaryAccount, "5f0c2b7e9d1a", "99998888"} {
		if n := v.tablesContaining(t, canary); n != 0 {
			t.Fatalf("%q found in %d tables", canary, n)
		}
	}
}

// tablesContaining counts the tables, in every schema kluis owns, that have a
// row whose text form holds needle, or the hex of needle (how bytea prints).
func (v *testVault) tablesContaining(t *testing.T, needle string) int {
	t.Helper()
	ctx := context.Background()
	rows, err := v.db.Pool.Query(ctx, `
		SELECT table_schema, table_name FROM information_schema.tables
		WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')`)
	if err != nil {
		t.Fatal(err)
	}
	type table struct{ schema, name string }
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
		var tb table
		return tb, r.Scan(&tb.schema, &tb.name)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) < 4 {
		t.Fatalf("only %d tables found", len(tables))
	}
	found := 0
	for _, tb := range tables {
		q := fmt.Sprintf(`SELECT count(*) FROM %s t WHERE strpos(lower(t::text), lower($1)) > 0 OR strpos(lower(t::text), $2) > 0`,
			pgx.Identifier{tb.schema, tb.name}.Sanitize())
		text := needle
		if !utf8.ValidString(needle) {
			text = hex.EncodeToString([]byte(needle)) // raw bytes cannot be a text parameter
		}
		if v.count(t, q, text, hex.EncodeToString([]byte(needle))) > 0 {
			found++
		}
	}
	return found
}

func TestSystemKeysSurviveARestart(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	again, err := LoadSystemKeys(context.Background(), v.db, v.provider)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if v.sys.Pseudonym("subject", "sub_x") != again.Pseudonym("subject", "sub_x") {
		t.Fatal("the pseudonym changed across a restart")
	}
	if idx := testKinds.blindIndex(v.sys, KindAccountNumber, "123"); idx == nil || !bytes.Equal(idx, testKinds.blindIndex(again, KindAccountNumber, "123")) {
		t.Fatal("the blind index changed across a restart")
	}
	if n := v.count(t, `SELECT count(*) FROM keystore.system_keys`); n != len(DefaultSystemKeys) {
		t.Fatalf("%d system keys, want %d", n, len(DefaultSystemKeys))
	}
}

func TestPseudonymsAreKeyedAndSeparatedByKind(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	p := v.sys.Pseudonym("subject", "sub_x")
	if len(p) != 32 {
		t.Fatalf("pseudonym %q is not 128 bits of hex", p)
	}
	if p == v.sys.Pseudonym("staff", "sub_x") || p == v.sys.Pseudonym("subject", "sub_y") {
		t.Fatal("pseudonyms collide across kinds or values")
	}
	if p == v.sys.Pseudonym("subjects", "ub_x") {
		t.Fatal("shifting a byte from value to kind gave the same pseudonym")
	}
	m, err := v.sys.MAC(SystemKeyBlindIndex, []byte("0.32"), []byte("0.45"))
	if err != nil || len(m) != 32 {
		t.Fatalf("MAC: %v", err)
	}
	if _, err := v.sys.MAC("no-such-key", []byte("x")); err == nil {
		t.Fatal("a MAC under a key never loaded")
	}
}

func TestSubjectsMapExternalIDsToInternalOnes(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	ctx := context.Background()
	a := v.subject(t, "auth0|abc")
	if !kluis.ValidID(PrefixSubject, a) {
		t.Fatalf("%q is not a subject id", a)
	}
	if again := v.subject(t, "auth0|abc"); again != a {
		t.Fatalf("the same external id got %s then %s", a, again)
	}
	if got, err := LookupSubject(ctx, v.db.Pool, "auth0|abc"); err != nil || got != a {
		t.Fatalf("lookup: %s %v", got, err)
	}
	_, err := LookupSubject(ctx, v.db.Pool, "nobody")
	wantCode(t, err, kluis.ENotFound)
	_, err = EnsureSubject(ctx, v.db.Pool, "")
	wantCode(t, err, kluis.EInvalid)

	v.seal(t, a, KindBankAccessToken, `{"access_token":"t"}`, "")
	wantCode(t, DeleteSubject(ctx, v.db.Pool, a), kluis.EInvalid)
	err = v.db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := v.ring.DestroySubjectKeys(ctx, tx, a); err != nil {
			return err
		}
		if _, err := v.store.DestroySubjectCredentials(ctx, tx, a); err != nil {
			return err
		}
		return DeleteSubject(ctx, tx, a)
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = LookupSubject(ctx, v.db.Pool, "auth0|abc")
	wantCode(t, err, kluis.ENotFound)
}
