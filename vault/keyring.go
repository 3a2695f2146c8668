package vault

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// The key hierarchy (docs/ENVELOPE.md, "Key hierarchy"):
//
//	root key (KMS, Transit, local)   never leaves its provider
//	  └ keyring key, one per epoch    keystore.keyring_keys, wrapped by the root
//	      └ subject key per version   keystore.subject_keys, wrapped locally
//	          └ sealed record         credentials.envelope
//
// A keyring key is unwrapped once per process and epoch, kept in memory, and
// confirmed with the provider again at least every Recheck: past that bound
// it is zeroed and dropped, and whatever needs a subject key answers 503
// until the provider confirms it again (a disabled root key, or a provider
// gone, stops kluis within the bound). Opening a subject key is then a local
// AES-GCM decryption, bound to the subject and key version: no provider
// call, whatever the number of subjects.

// DefaultKeyringRecheck is how long an unwrapped keyring key is used
// without the provider confirming it (KLUIS_KEYRING_RECHECK).
const DefaultKeyringRecheck = 5 * time.Minute

// keyringRetryEvery is how often the recheck loop ticks: kluis recovers
// within about this long of the provider's return (and requests that need
// a key try it too, sharing one attempt among those that wait at once).
const keyringRetryEvery = time.Second

// keyringActiveCheck is how often the recheck loop reads which epoch is
// active (a new one made by another instance), without a provider call.
const keyringActiveCheck = 10 * time.Second

// subjectKeyWrapVersion is the first byte of a locally wrapped subject key.
const subjectKeyWrapVersion byte = 0x01

// subjectKeyLabel separates a subject key's wrap from any other use of a
// keyring key.
const subjectKeyLabel = "kluis/keyring/subject-key/v1"

// wrappedSubjectKeyLen is 1 version byte, the nonce, the 32-byte key and
// the GCM tag.
const wrappedSubjectKeyLen = 1 + nonceSize + keySize + tagSize

// KeyringOptions tune the keyring. Zero values take the defaults.
type KeyringOptions struct {
	// Recheck is how long an unwrapped keyring key is used without the
	// provider confirming it; the recheck loop confirms it at half that age.
	Recheck time.Duration
	// Clock tells the time; tests inject their own.
	Clock kluis.Clock
}

func (o KeyringOptions) withDefaults() KeyringOptions {
	if o.Recheck <= 0 {
		o.Recheck = DefaultKeyringRecheck
	}
	if o.Clock == nil {
		o.Clock = kluis.SystemClock{}
	}
	return o
}

// keyringKey is one unwrapped keyring key and when the provider last
// confirmed it.
type keyringKey struct {
	key         []byte
	confirmedAt time.Time
}

// keyring holds the unwrapped keyring keys of every epoch still in use.
type keyring struct {
	provider KeyProvider
	opts     KeyringOptions

	mu     sync.RWMutex
	db     postgres.Querier // the pool keyring rows are read from (NewStore sets it)
	keys   map[uint32]*keyringKey
	active uint32

	// refresh runs one at a time (refreshing holds its one token; a waiter
	// leaves at its own deadline). Requests that wait for one together
	// share its answer (gen counts the refreshes done), so a provider that
	// is down gets one call per wave of requests, and the breaker in front
	// of it (kluis serve) fails them at once after a few.
	refreshing  chan struct{}
	errMu       sync.Mutex
	gen         uint64
	lastErr     error
	activeRead  time.Time
	providerHit uint64 // provider calls made for keyring keys, for tests and metrics
}

func newKeyring(provider KeyProvider, opts KeyringOptions) *keyring {
	return &keyring{provider: provider, opts: opts.withDefaults(), keys: make(map[uint32]*keyringKey), refreshing: make(chan struct{}, 1)}
}

// setDB names the pool the keyring reads its rows from, once.
func (k *keyring) setDB(db postgres.Querier) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.db == nil {
		k.db = db
	}
}

// keyringKeyID is the identity a keyring key is bound to at the provider.
func keyringKeyID(epoch uint32) string {
	return "keyring/v" + strconv.FormatUint(uint64(epoch), 10)
}

// fresh reports whether e was confirmed within the bound at now.
func (k *keyring) fresh(e *keyringKey, now time.Time) bool {
	return e != nil && now.Sub(e.confirmedAt) < k.opts.Recheck
}

// use calls fn with the keyring key of epoch, fetching it from the provider
// first when it is missing or past its recheck bound. fn runs under a read
// lock and must not keep the key. A key the provider will not confirm is
// EUnavailable (503): nothing is written under it.
func (k *keyring) use(ctx context.Context, epoch uint32, fn func(key []byte) error) error {
	for attempt := 0; ; attempt++ {
		k.mu.RLock()
		e := k.keys[epoch]
		if k.fresh(e, k.opts.Clock.Now()) {
			defer k.mu.RUnlock()
			return fn(e.key)
		}
		k.mu.RUnlock()
		if attempt > 0 {
			return keyringUnavailable(k.lastError())
		}
		if err := k.refresh(ctx, false); err != nil {
			return err
		}
	}
}

// activeEpoch returns the epoch new subject keys are wrapped under, loading
// the keyring (and making epoch 1 on first start) when it has not been.
func (k *keyring) activeEpoch(ctx context.Context) (uint32, error) {
	k.mu.RLock()
	active := k.active
	k.mu.RUnlock()
	if active != 0 {
		return active, nil
	}
	if err := k.refresh(ctx, true); err != nil {
		return 0, err
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.active == 0 {
		return 0, keyringUnavailable(k.lastError())
	}
	return k.active, nil
}

func (k *keyring) lastError() error {
	k.errMu.Lock()
	defer k.errMu.Unlock()
	return k.lastErr
}

// keyringUnavailable is the 503 of a keyring key that is not confirmed.
func keyringUnavailable(cause error) error {
	if cause == nil {
		cause = errors.New("vault: keyring key not confirmed by the key provider")
	}
	if kluis.ErrorCode(cause) == kluis.EUnavailable {
		return cause
	}
	return kluis.Unavailable("key provider", fmt.Errorf("vault: keyring: %w", cause))
}

// keyringRow is one row of keystore.keyring_keys.
type keyringRow struct {
	epoch   uint32
	wrapped WrappedKey
	at      time.Time
}

// readKeyringRows reads every keyring key, oldest epoch first.
func readKeyringRows(ctx context.Context, q postgres.Querier) ([]keyringRow, error) {
	rows, err := q.Query(ctx, `SELECT epoch, wrapped, root_version, created_at FROM keystore.keyring_keys ORDER BY epoch`)
	if err != nil {
		return nil, fmt.Errorf("vault: read keyring keys: %w", postgres.Translate(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (keyringRow, error) {
		var kr keyringRow
		return kr, r.Scan(&kr.epoch, &kr.wrapped.Ciphertext, &kr.wrapped.RootVersion, &kr.at)
	})
	if err != nil {
		return nil, fmt.Errorf("vault: read keyring keys: %w", postgres.Translate(err))
	}
	return out, nil
}

// refresh reads the keyring rows and has the provider unwrap each epoch's
// key again: that is the confirmation. A key the provider refuses is zeroed
// and dropped at once; one it cannot be asked about stays until its bound.
// Epochs whose rows are gone are dropped. Unless force, a caller that
// waited while another refresh ran takes that refresh's answer.
func (k *keyring) refresh(ctx context.Context, force bool) error {
	k.errMu.Lock()
	gen := k.gen
	k.errMu.Unlock()
	select {
	case k.refreshing <- struct{}{}:
		defer func() { <-k.refreshing }()
	case <-ctx.Done():
		return keyringUnavailable(ctx.Err())
	}
	k.errMu.Lock()
	if !force && k.gen != gen {
		// A refresh ended while this one waited: its answer is this one's.
		err := k.lastErr
		k.errMu.Unlock()
		if err != nil {
			return keyringUnavailable(err)
		}
		return nil
	}
	k.errMu.Unlock()
	err := k.refreshLocked(ctx)
	if err != nil && ctx.Err() != nil {
		// The caller gave up: that says nothing of the provider.
		return keyringUnavailable(err)
	}
	k.errMu.Lock()
	k.gen++
	k.lastErr = err
	k.errMu.Unlock()
	if err != nil {
		return keyringUnavailable(err)
	}
	return nil
}

func (k *keyring) refreshLocked(ctx context.Context) error {
	k.mu.RLock()
	db := k.db
	k.mu.RUnlock()
	if db == nil {
		return kluis.Errorf(kluis.EInternal, "internal error")
	}
	rows, err := readKeyringRows(ctx, db)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		if err := createKeyringEpoch(ctx, db, k.provider, 1); err != nil {
			return err
		}
		if rows, err = readKeyringRows(ctx, db); err != nil {
			return err
		}
	}
	fetched := make(map[uint32]*keyringKey, len(rows))
	var firstErr error
	for _, row := range rows {
		key, err := k.unwrap(ctx, row)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			if !errors.Is(err, ErrKeyUnavailable) {
				fetched[row.epoch] = nil // refused: drop it now
			}
			continue
		}
		fetched[row.epoch] = &keyringKey{key: key, confirmedAt: k.opts.Clock.Now()}
	}
	k.install(rows, fetched)
	return firstErr
}

// unwrap asks the provider for one epoch's key.
func (k *keyring) unwrap(ctx context.Context, row keyringRow) ([]byte, error) {
	k.mu.Lock()
	k.providerHit++
	k.mu.Unlock()
	key, err := k.provider.Unwrap(ctx, keyringKeyID(row.epoch), row.wrapped)
	if err != nil {
		return nil, providerError(fmt.Sprintf("unwrap keyring key (epoch %d)", row.epoch), err)
	}
	if len(key) != keySize {
		clear(key)
		return nil, kluis.Errorf(kluis.EInternal, "internal error")
	}
	return key, nil
}

// install swaps in the fetched keys (zeroing the ones they replace), drops
// refused epochs and epochs no longer stored, and sets the active epoch.
func (k *keyring) install(rows []keyringRow, fetched map[uint32]*keyringKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	stored := make(map[uint32]bool, len(rows))
	for _, row := range rows {
		stored[row.epoch] = true
		k.active = max(k.active, row.epoch)
	}
	for epoch, e := range fetched {
		if old := k.keys[epoch]; old != nil {
			clear(old.key)
		}
		if e == nil {
			delete(k.keys, epoch)
			continue
		}
		k.keys[epoch] = e
	}
	for epoch, e := range k.keys {
		if !stored[epoch] {
			clear(e.key)
			delete(k.keys, epoch)
		}
	}
	k.activeRead = k.opts.Clock.Now()
}

// createKeyringEpoch makes the keyring key of epoch through the provider and
// stores it; another instance making the same epoch at once wins or loses
// the insert, and exactly one key exists for the epoch.
func createKeyringEpoch(ctx context.Context, q postgres.Querier, provider KeyProvider, epoch uint32) error {
	dk, err := provider.GenerateDataKey(ctx, keyringKeyID(epoch))
	if err != nil {
		return providerError("generate keyring key", err)
	}
	clear(dk.Plaintext) // refresh unwraps the stored one: one code path for every epoch
	if _, err := q.Exec(ctx, `
		INSERT INTO keystore.keyring_keys (epoch, wrapped, root_version) VALUES ($1, $2, $3)
		ON CONFLICT (epoch) DO NOTHING`, epoch, dk.Wrapped.Ciphertext, dk.Wrapped.RootVersion); err != nil {
		return fmt.Errorf("vault: store keyring key: %w", postgres.Translate(err))
	}
	return nil
}

// expire zeroes and drops every key past its recheck bound.
func (k *keyring) expire() {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.opts.Clock.Now()
	for epoch, e := range k.keys {
		if !k.fresh(e, now) {
			clear(e.key)
			delete(k.keys, epoch)
		}
	}
}

// due reports whether a recheck is due: a key at half its bound, none
// loaded yet, the last attempt failed, or the active epoch not read for a
// while.
func (k *keyring) due() (confirm, readActive bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	now := k.opts.Clock.Now()
	if len(k.keys) == 0 || k.active == 0 || k.keys[k.active] == nil {
		return true, false
	}
	for _, e := range k.keys {
		if now.Sub(e.confirmedAt) >= k.opts.Recheck/2 {
			return true, false
		}
	}
	return false, now.Sub(k.activeRead) >= keyringActiveCheck
}

// tick is one turn of the recheck loop.
func (k *keyring) tick(ctx context.Context) {
	k.expire()
	confirm, readActive := k.due()
	if !confirm && k.lastError() != nil {
		confirm = true
	}
	switch {
	case confirm:
		_ = k.refresh(ctx, false) // its error is kept for requests and readiness
	case readActive:
		k.mu.RLock()
		before := k.active
		k.mu.RUnlock()
		if active, err := k.readActive(ctx); err == nil && active != before {
			// Another instance started an epoch: unwrap its key here, off
			// the request path, before the next seal needs it.
			_ = k.refresh(ctx, true)
		}
	}
}

// readActive learns of a newer epoch (made by another instance's rotation)
// without a provider call: the next use of it unwraps it. It returns the
// active epoch.
func (k *keyring) readActive(ctx context.Context) (uint32, error) {
	k.mu.RLock()
	db := k.db
	k.mu.RUnlock()
	if db == nil {
		return 0, kluis.Errorf(kluis.EInternal, "internal error")
	}
	var newest *int64
	if err := db.QueryRow(ctx, `SELECT max(epoch) FROM keystore.keyring_keys`).Scan(&newest); err != nil {
		return 0, fmt.Errorf("vault: read active epoch: %w", postgres.Translate(err))
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.activeRead = k.opts.Clock.Now()
	if newest != nil && uint32(*newest) > k.active {
		k.active = uint32(*newest)
	}
	return k.active, nil
}

// ready is nil when the active epoch's key is confirmed within its bound,
// and otherwise tries to confirm it (sharing the attempt of any refresh
// already under way).
func (k *keyring) ready(ctx context.Context) error {
	epoch, err := k.activeEpoch(ctx)
	if err != nil {
		return err
	}
	return k.use(ctx, epoch, func([]byte) error { return nil })
}

// purge zeroes and drops every key.
func (k *keyring) purge() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for epoch, e := range k.keys {
		clear(e.key)
		delete(k.keys, epoch)
	}
}

// calls is how many provider calls the keyring made.
func (k *keyring) calls() uint64 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.providerHit
}

// newSubjectKey makes a fresh subject key locally and wraps it under the
// active epoch. The caller zeroes key.
func (k *keyring) newSubjectKey(ctx context.Context, subjectID string, version uint32) (key, wrapped []byte, epoch uint32, err error) {
	if epoch, err = k.activeEpoch(ctx); err != nil {
		return nil, nil, 0, err
	}
	key = make([]byte, keySize)
	_, _ = rand.Read(key) // never fails on supported platforms (Go 1.24+)
	err = k.use(ctx, epoch, func(kk []byte) error {
		var err error
		wrapped, err = wrapSubjectKey(kk, subjectID, version, epoch, key)
		return err
	})
	if err != nil {
		clear(key)
		return nil, nil, 0, err
	}
	return key, wrapped, epoch, nil
}

// openSubjectKey unwraps a locally wrapped subject key. One that does not
// authenticate (tampered, or moved to another subject, version or epoch) is
// EIntegrity.
func (k *keyring) openSubjectKey(ctx context.Context, subjectID string, version, epoch uint32, wrapped []byte) ([]byte, error) {
	var key []byte
	err := k.use(ctx, epoch, func(kk []byte) error {
		var err error
		key, err = unwrapSubjectKey(kk, subjectID, version, epoch, wrapped)
		return err
	})
	if errors.Is(err, ErrEnvelopeAuth) || errors.Is(err, ErrMalformedEnvelope) {
		return nil, integrityError(fmt.Errorf("vault: subject key %s/v%d: %w", subjectID, version, err))
	}
	return key, err
}

// subjectKeyAAD binds a wrapped subject key to its subject, version and
// epoch, each length-prefixed.
func subjectKeyAAD(subjectID string, version, epoch uint32) []byte {
	out := make([]byte, 0, 2+len(subjectKeyLabel)+2+len(subjectID)+8)
	for _, f := range []string{subjectKeyLabel, subjectID} {
		out = binary.BigEndian.AppendUint16(out, uint16(len(f)))
		out = append(out, f...)
	}
	out = binary.BigEndian.AppendUint32(out, version)
	return binary.BigEndian.AppendUint32(out, epoch)
}

// wrapSubjectKey encrypts a subject key under a keyring key: the version
// byte, a random nonce, then AES-256-GCM of the key with the AAD of
// subjectKeyAAD.
func wrapSubjectKey(keyringKey []byte, subjectID string, version, epoch uint32, key []byte) ([]byte, error) {
	if len(key) != keySize || subjectID == "" || len(subjectID) > maxBindingField || version == 0 || epoch == 0 {
		return nil, errors.New("vault: bad subject key to wrap")
	}
	aead, err := newGCM(keyringKey)
	if err != nil {
		return nil, err
	}
	nonce := freshNonce()
	out := make([]byte, 0, wrappedSubjectKeyLen)
	out = append(out, subjectKeyWrapVersion)
	out = append(out, nonce[:]...)
	return aead.Seal(out, nonce[:], key, subjectKeyAAD(subjectID, version, epoch)), nil
}

// unwrapSubjectKey reverses wrapSubjectKey; it fails with
// ErrMalformedEnvelope for bytes of the wrong shape and ErrEnvelopeAuth for
// anything that does not authenticate.
func unwrapSubjectKey(keyringKey []byte, subjectID string, version, epoch uint32, wrapped []byte) ([]byte, error) {
	if len(wrapped) != wrappedSubjectKeyLen || wrapped[0] != subjectKeyWrapVersion {
		return nil, fmt.Errorf("%w: not a wrapped subject key", ErrMalformedEnvelope)
	}
	aead, err := newGCM(keyringKey)
	if err != nil {
		return nil, err
	}
	key, err := aead.Open(nil, wrapped[1:1+nonceSize], wrapped[1+nonceSize:], subjectKeyAAD(subjectID, version, epoch))
	if err != nil {
		return nil, ErrEnvelopeAuth
	}
	return key, nil
}
