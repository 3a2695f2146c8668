package vault

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// Rotation, as `kluis keys rotate` runs it (DESIGN.md, "Keys and envelopes"):
//
//   - a new root key version: RewrapBatch rewraps stored keys (subject and
//     system) under it, batch by batch, without kluis seeing a plaintext key;
//   - a subject key past its cryptoperiod, or a subject that still holds
//     records of envelope format version 1: ResealSubject gives the subject
//     a new key version, re-seals every record under it as version 2 (its
//     owner bound, once checked against the pointers), and deletes the old
//     versions, all in one transaction. Destroying the old key version is
//     what makes the upgrade stick: a saved copy of a version-1 envelope
//     cannot be put back, because the key it opens under is gone.
//
// Both are idempotent and resumable: a run stopped at any point leaves every
// key and record either as it was or done, and the next run picks up what is
// left.

// DefaultRewrapBatch is how many keys one RewrapBatch rewraps.
const DefaultRewrapBatch = 100

// RewrapBatch rewraps up to batch stored keys (subject keys first, then system
// keys) whose root version is not the provider's newest, in one transaction,
// and returns how many it rewrapped; 0 means nothing is left. Rows another
// instance is rewrapping are skipped, so runs may overlap.
//
// A provider that hides its versions (KMS: LatestVersion "") cannot say which
// keys are behind, so every key wrapped before cutoff is rewrapped (KMS
// ReEncrypt moves it to the newest backing key); a run takes its start as the
// cutoff, and a rewrapped key is not taken again in the same run.
func (r *KeyRing) RewrapBatch(ctx context.Context, db *postgres.DB, batch int, cutoff time.Time) (int, error) {
	if batch <= 0 {
		batch = DefaultRewrapBatch
	}
	info, err := r.provider.Describe(ctx)
	if err != nil {
		return 0, providerError("describe root key", err)
	}
	var n int
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		n, err = r.rewrapTable(ctx, tx, info.LatestVersion, batch, cutoff, `
			SELECT id, subject_id || '/v' || version, wrapped, root_version FROM keystore.subject_keys
			WHERE (root_version <> $1 OR ($1 = '' AND wrapped_at < $3)) ORDER BY id LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED`,
			`UPDATE keystore.subject_keys SET wrapped = $2, root_version = $3, wrapped_at = now() WHERE id = $1`)
		if err != nil || n > 0 {
			return err
		}
		n, err = r.rewrapTable(ctx, tx, info.LatestVersion, batch, cutoff, `
			SELECT name || '/' || version, 'system/' || name || '/v' || version, wrapped, root_version FROM keystore.system_keys
			WHERE (root_version <> $1 OR ($1 = '' AND wrapped_at < $3)) ORDER BY name, version LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED`,
			`UPDATE keystore.system_keys SET wrapped = $2, root_version = $3, wrapped_at = now() WHERE name || '/' || version = $1`)
		return err
	})
	return n, err
}

// rewrapTable rewraps one batch of one key table. selectSQL returns (row
// key, provider key id, wrapped, root version); updateSQL takes (row key,
// wrapped, root version). The provider key ids match providerKeyID and
// systemKeyID.
func (r *KeyRing) rewrapTable(ctx context.Context, tx pgx.Tx, latest string, batch int, cutoff time.Time, selectSQL, updateSQL string) (int, error) {
	rows, err := tx.Query(ctx, selectSQL, latest, batch, cutoff)
	if err != nil {
		return 0, fmt.Errorf("vault: read keys to rewrap: %w", postgres.Translate(err))
	}
	var rowKeys []string
	var items []RewrapItem
	for rows.Next() {
		var rowKey string
		var it RewrapItem
		if err := rows.Scan(&rowKey, &it.KeyID, &it.Wrapped.Ciphertext, &it.Wrapped.RootVersion); err != nil {
			rows.Close()
			return 0, fmt.Errorf("vault: read keys to rewrap: %w", postgres.Translate(err))
		}
		rowKeys = append(rowKeys, rowKey)
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("vault: read keys to rewrap: %w", postgres.Translate(err))
	}
	if len(items) == 0 {
		return 0, nil
	}
	out, err := r.provider.Rewrap(ctx, items)
	if err != nil {
		return 0, providerError("rewrap keys", err)
	}
	if len(out) != len(items) {
		return 0, kluis.Wrap(kluis.EInternal, "internal error", fmt.Errorf("vault: rewrap returned %d keys for %d", len(out), len(items)))
	}
	for i, w := range out {
		// A provider that does not move keys to the version it calls newest
		// would make every run rewrap the same keys forever.
		if w.RootVersion != latest {
			return 0, kluis.Wrap(kluis.EInternal, "internal error", fmt.Errorf("vault: rewrap gave root version %q, newest is %q", w.RootVersion, latest))
		}
		if _, err := tx.Exec(ctx, updateSQL, rowKeys[i], w.Ciphertext, w.RootVersion); err != nil {
			return 0, fmt.Errorf("vault: store rewrapped key: %w", postgres.Translate(err))
		}
	}
	return len(out), nil
}

// SubjectsDueForReseal lists, in id order after the subject id after ("" to
// start), up to limit subjects whose newest key is older than cryptoperiod,
// or that still hold a version-1 record (current or pending version) whose
// owner is known (to be re-sealed as version 2). A subject whose keys are gone (erased) is never
// listed, so a run cannot loop on it.
func SubjectsDueForReseal(ctx context.Context, q Querier, cryptoperiod time.Duration, after string, limit int) ([]string, error) {
	rows, err := q.Query(ctx, `
		SELECT subject_id FROM (
			SELECT subject_id FROM keystore.subject_keys
			GROUP BY subject_id
			HAVING max(created_at) < now() - make_interval(secs => $1)
			UNION
			SELECT c.subject_id FROM credentials c
			WHERE (get_byte(c.envelope, 0) = 1 OR get_byte(c.pending_envelope, 0) = 1) AND c.owner_type IS NOT NULL
			AND EXISTS (SELECT 1 FROM keystore.subject_keys k WHERE k.subject_id = c.subject_id)
		) due
		WHERE subject_id > $2
		ORDER BY subject_id LIMIT $3`, cryptoperiod.Seconds(), after, limit)
	if err != nil {
		return nil, fmt.Errorf("vault: subjects due for reseal: %w", postgres.Translate(err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("vault: subjects due for reseal: %w", postgres.Translate(err))
	}
	return ids, nil
}

// ResealResult says what ResealSubject did.
type ResealResult struct {
	// NewVersion is the subject's key version after the re-seal.
	NewVersion uint32
	// Records is how many records were re-sealed.
	Records int
	// DestroyedVersions is how many old key versions were deleted.
	DestroyedVersions int
}

// ResealSubject gives the subject a new key version, re-seals every one of
// its records under it (same ref, new envelope, format version 2 with its
// owner bound), and deletes the old versions, in one transaction. Seals in
// progress for the subject finish first (they hold a lock on the key they
// use) and their records are re-sealed too. A subject with no key is
// ENotFound.
//
// A version-1 record binds no owner: before its owner is bound, owners must
// confirm that exactly that owner points at it, so that an owner column
// edited while the record was unbound is not made authentic; a record that
// fails the check, or does not open, fails the whole subject with
// EIntegrity and changes nothing. A record whose owner is unknown stays
// version 1 under the new key. owners may be nil only when no version-1
// record has an owner.
func (s *Store) ResealSubject(ctx context.Context, db *postgres.DB, subjectID string, owners OwnerPointers) (ResealResult, error) {
	var res ResealResult
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		res, err = s.resealSubject(ctx, tx, subjectID, owners)
		return err
	})
	if err == nil {
		// The old versions are gone; forget them here at once.
		s.ring.cache.evictSubject(subjectID)
	}
	return res, err
}

func (s *Store) resealSubject(ctx context.Context, tx pgx.Tx, subjectID string, owners OwnerPointers) (ResealResult, error) {
	old, err := lockSubjectKeys(ctx, tx, subjectID)
	if err != nil {
		return ResealResult{}, err
	}
	if len(old) == 0 {
		return ResealResult{}, kluis.Errorf(kluis.ENotFound, "not found")
	}
	newVersion := old[len(old)-1].version + 1
	dk, err := s.ring.provider.GenerateDataKey(ctx, providerKeyID(subjectID, newVersion))
	if err != nil {
		return ResealResult{}, providerError("generate subject key", err)
	}
	defer clear(dk.Plaintext)
	if len(dk.Plaintext) != keySize {
		return ResealResult{}, kluis.Errorf(kluis.EInternal, "internal error")
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO keystore.subject_keys (id, subject_id, version, wrapped, root_version)
		VALUES ($1, $2, $3, $4, $5)`,
		kluis.NewID(PrefixSubjectKey), subjectID, newVersion, dk.Wrapped.Ciphertext, dk.Wrapped.RootVersion); err != nil {
		return ResealResult{}, fmt.Errorf("vault: store subject key: %w", postgres.Translate(err))
	}
	n, err := s.resealRecords(ctx, tx, subjectID, old, newVersion, dk.Plaintext, owners)
	if err != nil {
		return ResealResult{}, err
	}
	tag, err := tx.Exec(ctx, `DELETE FROM keystore.subject_keys WHERE subject_id = $1 AND version < $2`, subjectID, newVersion)
	if err != nil {
		return ResealResult{}, fmt.Errorf("vault: destroy old subject keys: %w", postgres.Translate(err))
	}
	return ResealResult{NewVersion: newVersion, Records: n, DestroyedVersions: int(tag.RowsAffected())}, nil
}

// lockSubjectKeys reads every key version of the subject, oldest first, and
// locks them against seals and other re-seals until the transaction ends.
func lockSubjectKeys(ctx context.Context, tx pgx.Tx, subjectID string) ([]storedKey, error) {
	rows, err := tx.Query(ctx, `
		SELECT version, wrapped, root_version FROM keystore.subject_keys
		WHERE subject_id = $1 ORDER BY version FOR UPDATE`, subjectID)
	if err != nil {
		return nil, fmt.Errorf("vault: lock subject keys: %w", postgres.Translate(err))
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (storedKey, error) {
		var sk storedKey
		return sk, r.Scan(&sk.version, &sk.wrapped, &sk.rootVersion)
	})
	if err != nil {
		return nil, fmt.Errorf("vault: lock subject keys: %w", postgres.Translate(err))
	}
	return keys, nil
}

type sealedRecord struct {
	ref, kind  string
	keyVersion uint32
	owner      Owner
	envelope   []byte
}

// resealRecords opens each of the subject's records under its old key and
// seals it again under newKey.
func (s *Store) resealRecords(ctx context.Context, tx pgx.Tx, subjectID string, old []storedKey, newVersion uint32, newKey []byte, owners OwnerPointers) (int, error) {
	rows, err := tx.Query(ctx, `
		SELECT ref, kind, key_version, COALESCE(owner_type, ''), COALESCE(owner_id, ''), envelope FROM credentials
		WHERE subject_id = $1 AND key_version < $2 AND envelope IS NOT NULL ORDER BY ref FOR UPDATE`, subjectID, newVersion)
	if err != nil {
		return 0, fmt.Errorf("vault: read records to reseal: %w", postgres.Translate(err))
	}
	recs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sealedRecord, error) {
		var rec sealedRecord
		return rec, r.Scan(&rec.ref, &rec.kind, &rec.keyVersion, &rec.owner.Type, &rec.owner.ID, &rec.envelope)
	})
	if err != nil {
		return 0, fmt.Errorf("vault: read records to reseal: %w", postgres.Translate(err))
	}
	byVersion := make(map[uint32]storedKey, len(old))
	for _, sk := range old {
		byVersion[sk.version] = sk
	}
	if err := s.resealEach(ctx, tx, subjectID, recs, byVersion, newVersion, newKey, owners, `
		UPDATE credentials SET envelope = $2, key_version = $3, updated_at = now() WHERE ref = $1`); err != nil {
		return 0, err
	}
	pending, err := s.resealPending(ctx, tx, subjectID, byVersion, newVersion, newKey, owners)
	if err != nil {
		return 0, err
	}
	return len(recs) + pending, nil
}

// resealEach re-seals each of recs under newKey (newVersion), after the
// pointer check for a record sealed before envelopes bound their owner, and
// stores it with store (UPDATE … WHERE ref = $1, given the new envelope and
// key version), for current and pending versions alike.
func (s *Store) resealEach(ctx context.Context, tx pgx.Tx, subjectID string, recs []sealedRecord, byVersion map[uint32]storedKey,
	newVersion uint32, newKey []byte, owners OwnerPointers, store string) error {
	for _, rec := range recs {
		sk, ok := byVersion[rec.keyVersion]
		if !ok {
			return kluis.Wrap(kluis.EInternal, "internal error", fmt.Errorf("vault: a version of %s names key version %d, which is gone", rec.ref, rec.keyVersion))
		}
		if err := checkUnboundOwner(ctx, tx, owners, rec); err != nil {
			return err
		}
		env, err := s.reseal(ctx, subjectID, rec, sk, newVersion, newKey)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, store, rec.ref, env, newVersion); err != nil {
			return fmt.Errorf("vault: store resealed record: %w", postgres.Translate(err))
		}
	}
	return nil
}

// resealPending re-seals the pending versions (rotations under way) of the
// subject's credentials: the old key versions are deleted next, and a
// pending version left under one would be a live provider token nobody can
// open. A pending version is bound to the credential's owner like the
// current one (format version 2), after the same pointer check when it was
// sealed as version 1.
func (s *Store) resealPending(ctx context.Context, tx pgx.Tx, subjectID string, byVersion map[uint32]storedKey, newVersion uint32, newKey []byte, owners OwnerPointers) (int, error) {
	rows, err := tx.Query(ctx, `
		SELECT ref, kind, pending_key_version, COALESCE(owner_type, ''), COALESCE(owner_id, ''), pending_envelope FROM credentials
		WHERE subject_id = $1 AND pending_envelope IS NOT NULL AND pending_key_version < $2 ORDER BY ref FOR UPDATE`, subjectID, newVersion)
	if err != nil {
		return 0, fmt.Errorf("vault: read pending versions to reseal: %w", postgres.Translate(err))
	}
	recs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sealedRecord, error) {
		var rec sealedRecord
		return rec, r.Scan(&rec.ref, &rec.kind, &rec.keyVersion, &rec.owner.Type, &rec.owner.ID, &rec.envelope)
	})
	if err != nil {
		return 0, fmt.Errorf("vault: read pending versions to reseal: %w", postgres.Translate(err))
	}
	if err := s.resealEach(ctx, tx, subjectID, recs, byVersion, newVersion, newKey, owners, `
		UPDATE credentials SET pending_envelope = $2, pending_key_version = $3, updated_at = now() WHERE ref = $1`); err != nil {
		return 0, err
	}
	return len(recs), nil
}

// checkUnboundOwner confirms, before a version-1 record's owner is bound
// into its AAD, that the owner its row names is the one (and only) owner
// pointing at it, and that it fits the record's kind. Records already bound
// (version 2) and records with no owner need nothing.
func checkUnboundOwner(ctx context.Context, tx pgx.Tx, owners OwnerPointers, rec sealedRecord) error {
	if EnvelopeVersion(rec.envelope) != EnvelopeV1 || rec.owner.IsZero() {
		return nil
	}
	if !rec.owner.Valid() || OwnerTypeOf(rec.kind) != rec.owner.Type {
		return integrityError(fmt.Errorf("vault: reseal %s: owner %s does not fit kind %s", rec.ref, rec.owner, rec.kind))
	}
	if owners == nil {
		return kluis.Wrap(kluis.EInternal, "internal error", fmt.Errorf("vault: reseal %s: no pointer check to bind its owner", rec.ref))
	}
	return CheckPointers(ctx, owners, tx, rec.ref, rec.owner)
}

// reseal opens rec under its old key and seals it under newKey: as format
// version 2 with its owner bound, or, for a record whose owner is unknown,
// as version 1 (it can be given no owner, but must leave the old key).
func (s *Store) reseal(ctx context.Context, subjectID string, rec sealedRecord, sk storedKey, newVersion uint32, newKey []byte) ([]byte, error) {
	var env []byte
	err := s.ring.withStoredKey(ctx, subjectID, sk, func(oldKey []byte) error {
		secret, err := OpenEnvelope(oldKey, Binding{SubjectID: subjectID, Ref: rec.ref, Kind: rec.kind, KeyVersion: rec.keyVersion, Owner: rec.owner}, rec.envelope)
		if err != nil {
			return integrityError(fmt.Errorf("vault: reseal %s: %w", rec.ref, err))
		}
		defer clear(secret)
		b := Binding{SubjectID: subjectID, Ref: rec.ref, Kind: rec.kind, KeyVersion: newVersion, Owner: rec.owner}
		if rec.owner.IsZero() {
			env, err = sealEnvelopeV1(newKey, b, secret)
			return err
		}
		env, err = SealEnvelope(newKey, b, secret)
		return err
	})
	return env, err
}
