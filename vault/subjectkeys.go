package vault

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// Identifier prefixes of the vault's own objects (the rest are in id.go).
const (
	PrefixSubject    = "sub_"
	PrefixSubjectKey = "sk_"
)

// KeyRing gives out subject keys: it makes a subject's first key, opens
// stored keys, and holds the middle level of the key hierarchy (the keyring
// keys, keyring.go). Subject keys wrapped by a keyring key open locally, with
// no provider call; keys still wrapped directly by the root key (made before
// the hierarchy) unwrap through the provider and are kept in a bounded
// cache until the rotation job moves them into the hierarchy. It is safe
// for concurrent use and holds no database handle for subject keys: every
// method runs on the caller's pool or transaction, so that a key created for
// a record is committed, or rolled back, with the record.
type KeyRing struct {
	provider KeyProvider
	cache    *keyCache
	keyring  *keyring
}

// NewKeyRing returns a key ring over provider with the given cache bounds
// and keyring recheck. It reads its keyring keys through the pool NewStore
// gives it (or LoadKeyring).
func NewKeyRing(provider KeyProvider, opts CacheOptions) *KeyRing {
	opts = opts.withDefaults()
	return &KeyRing{
		provider: provider,
		cache:    newKeyCache(opts),
		keyring:  newKeyring(provider, KeyringOptions{Recheck: opts.KeyringRecheck, Clock: opts.Clock}),
	}
}

// LoadKeyring reads the keyring keys from db and has the provider unwrap
// them, making epoch 1's key on a first start: kluis checks at start that
// it can serve. It is EUnavailable while the provider cannot be reached.
func (r *KeyRing) LoadKeyring(ctx context.Context, db postgres.Querier) error {
	r.keyring.setDB(db)
	return r.keyring.refresh(ctx, true)
}

// Ready is nil when the active keyring key is confirmed by the provider
// within KLUIS_KEYRING_RECHECK, so that kluis can serve work that needs
// keys; otherwise it tries to confirm it again (one attempt shared by the
// callers waiting at once), and is EUnavailable while it cannot. /readyz
// asks it.
func (r *KeyRing) Ready(ctx context.Context) error { return r.keyring.ready(ctx) }

// RunKeyringRecheck confirms the keyring keys with the provider before
// their bound lapses, drops (zeroes) those past it, retries every second
// while the provider fails, and notices new epochs, until ctx ends; then it
// zeroes every keyring key.
func (r *KeyRing) RunKeyringRecheck(ctx context.Context) {
	t := time.NewTicker(keyringRetryEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.keyring.purge()
			return
		case <-t.C:
			r.keyring.tick(ctx)
		}
	}
}

// KeyringProviderCalls is how many provider calls this key ring made for
// keyring keys (unwraps that load or confirm them), for tests and metrics.
func (r *KeyRing) KeyringProviderCalls() uint64 { return r.keyring.calls() }

// storedKey is a subject key's row in keystore.subject_keys. epoch is the
// keyring epoch that wraps it, 0 for a key wrapped by the root key.
type storedKey struct {
	version     uint32
	wrapped     []byte
	rootVersion string
	epoch       uint32
}

// providerKeyID is the identity a root-wrapped subject key is bound to at
// the provider (KMS encryption context, for one): a wrapped key copied to
// another subject or version does not unwrap. The subject id is random and
// internal, never personal data.
func providerKeyID(subjectID string, version uint32) string {
	return subjectID + "/v" + strconv.FormatUint(uint64(version), 10)
}

// withCurrentKey calls fn with the subject's newest key and its version,
// creating version 1 on first use. The key passed to fn is zeroed when fn
// returns; fn must not keep it.
func (r *KeyRing) withCurrentKey(ctx context.Context, q postgres.Querier, subjectID string, fn func(version uint32, key []byte) error) error {
	// Three reads at most: one that finds no key; a second, in a new
	// snapshot, in case a re-seal replaced the key while the first waited on
	// its lock; a third after losing the race to create version 1.
	for attempt := 0; attempt < 3; attempt++ {
		sk, found, err := currentSubjectKey(ctx, q, subjectID)
		if err != nil {
			return err
		}
		if found {
			return r.withStoredKey(ctx, subjectID, sk, func(key []byte) error { return fn(sk.version, key) })
		}
		if attempt == 0 {
			continue
		}
		created, err := r.createFirstKey(ctx, q, subjectID, fn)
		if err != nil || created {
			return err
		}
	}
	return kluis.Errorf(kluis.EInternal, "internal error")
}

// createFirstKey makes version 1 of a subject's key, locally, wrapped under
// the active keyring epoch (no provider call), and, if this call's row won,
// calls fn with it. created is false when another transaction's row won.
func (r *KeyRing) createFirstKey(ctx context.Context, q postgres.Querier, subjectID string, fn func(version uint32, key []byte) error) (created bool, err error) {
	const version = 1
	key, wrapped, epoch, err := r.keyring.newSubjectKey(ctx, subjectID, version)
	if err != nil {
		return false, err
	}
	defer clear(key)
	// ON CONFLICT: another instance (or transaction) creating the same
	// subject's first key at the same moment waits for ours, or we for
	// theirs, and exactly one version 1 exists.
	tag, err := q.Exec(ctx, `
		INSERT INTO keystore.subject_keys (id, subject_id, version, wrapped, root_version, keyring_epoch)
		VALUES ($1, $2, $3, $4, '', $5)
		ON CONFLICT (subject_id, version) DO NOTHING`,
		kluis.NewID(PrefixSubjectKey), subjectID, version, wrapped, epoch)
	if err != nil {
		return false, fmt.Errorf("vault: store subject key: %w", postgres.Translate(err))
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	return true, fn(version, key)
}

// withStoredKey opens sk and calls fn with it: locally under its keyring
// epoch, or, for a key wrapped by the root, through the provider and the
// cache.
func (r *KeyRing) withStoredKey(ctx context.Context, subjectID string, sk storedKey, fn func(key []byte) error) error {
	if sk.epoch != 0 {
		key, err := r.keyring.openSubjectKey(ctx, subjectID, sk.version, sk.epoch, sk.wrapped)
		if err != nil {
			return err
		}
		defer clear(key)
		return fn(key)
	}
	id := cacheKey{subject: subjectID, version: sk.version}
	key, err := r.cache.get(ctx, id, sk.wrapped, func(ctx context.Context) ([]byte, error) {
		return r.unwrapRootWrapped(ctx, subjectID, sk)
	})
	if err != nil {
		return err
	}
	defer clear(key)
	return fn(key)
}

// unwrapRootWrapped has the provider unwrap a subject key from before the
// hierarchy.
func (r *KeyRing) unwrapRootWrapped(ctx context.Context, subjectID string, sk storedKey) ([]byte, error) {
	k, err := r.provider.Unwrap(ctx, providerKeyID(subjectID, sk.version), WrappedKey{Ciphertext: sk.wrapped, RootVersion: sk.rootVersion})
	if err != nil {
		return nil, providerError("unwrap subject key", err)
	}
	return k, nil
}

// currentSubjectKey reads the subject's newest key and holds a key-share lock
// on its row until the caller's transaction ends: a re-seal (which locks the
// row for update and then deletes it) waits for the record being sealed under
// it and re-seals that record too, instead of deleting the key from under it.
func currentSubjectKey(ctx context.Context, q postgres.Querier, subjectID string) (storedKey, bool, error) {
	var sk storedKey
	err := q.QueryRow(ctx, `
		SELECT version, wrapped, root_version, COALESCE(keyring_epoch, 0) FROM keystore.subject_keys
		WHERE subject_id = $1 ORDER BY version DESC LIMIT 1
		FOR KEY SHARE`, subjectID).
		Scan(&sk.version, &sk.wrapped, &sk.rootVersion, &sk.epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		return storedKey{}, false, nil
	}
	if err != nil {
		return storedKey{}, false, fmt.Errorf("vault: read subject key: %w", postgres.Translate(err))
	}
	return sk, true, nil
}

// DestroySubjectKeys deletes every key of the subject in the caller's
// transaction and evicts them from this instance's cache (crypto-shredding):
// once the transaction commits, nothing sealed for the subject opens again,
// wherever a copy of it survives. It returns how many key versions it
// deleted. Other instances stop using their cached copies at once too, since
// every use checks the key store; their memory copies age out within
// CacheOptions.MaxAge.
func (r *KeyRing) DestroySubjectKeys(ctx context.Context, tx pgx.Tx, subjectID string) (int, error) {
	tag, err := tx.Exec(ctx, `DELETE FROM keystore.subject_keys WHERE subject_id = $1`, subjectID)
	if err != nil {
		return 0, fmt.Errorf("vault: destroy subject keys: %w", postgres.Translate(err))
	}
	// What the rotation job could not do for the subject goes with it.
	if _, err := tx.Exec(ctx, `DELETE FROM keystore.rotation_failures WHERE subject_id = $1`, subjectID); err != nil {
		return 0, fmt.Errorf("vault: destroy subject keys: %w", postgres.Translate(err))
	}
	r.cache.evictSubject(subjectID)
	return int(tag.RowsAffected()), nil
}

// Stats reports what the key cache did, for metrics.
func (r *KeyRing) Stats() CacheStats { return r.cache.snapshot() }

// Expire evicts and zeroes cached keys past their age. Lookups do it too;
// RunJanitor calls it so that idle keys do not outlive their age.
func (r *KeyRing) Expire() { r.cache.expire() }

// RunJanitor expires cached keys every interval until ctx ends, then zeroes
// every cached key.
func (r *KeyRing) RunJanitor(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.cache.purge()
			return
		case <-t.C:
			r.cache.expire()
		}
	}
}

// Purge zeroes and forgets every cached key and keyring key, for shutdown.
func (r *KeyRing) Purge() {
	r.cache.purge()
	r.keyring.purge()
}

// providerError turns a key provider's failure into a kluis error: a provider
// that cannot be reached is Unavailable (503 and Retry-After), a refusal is
// internal (it means misconfiguration or tampering, which a retry does not
// mend).
func providerError(op string, err error) error {
	if errors.Is(err, ErrKeyUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return kluis.Unavailable("key provider", fmt.Errorf("vault: %s: %w", op, err))
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return kluis.Wrap(kluis.EInternal, "internal error", fmt.Errorf("vault: %s: %w", op, err))
}
