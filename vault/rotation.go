package vault

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// Rotation, as `kluis keys rotate` and the daily key-rotation job run it
// (docs/ENVELOPE.md, "Rotation"), in four steps, each resumable:
//
//  1. Root rotation (a new root key version in KMS or Vault): the keyring
//     keys and the system keys, a handful, are rewrapped under it by the
//     provider (Transit rewrap, KMS ReEncrypt) without kluis seeing them.
//     Subject keys are not touched: they are wrapped by keyring keys.
//  2. A new keyring epoch, when asked for or when the active one is older
//     than its cryptoperiod: one provider call makes its key.
//  3. The epoch re-wrap: every subject key of an older epoch, or still
//     wrapped directly by the root key (from before the hierarchy), is
//     unwrapped and wrapped again under the active epoch, locally, in
//     batches of its own transactions. Each old epoch is walked in id
//     order (indexed); a finished key leaves the walk's filter, so nothing
//     finished is read again, and a key that fails is recorded in
//     keystore.rotation_failures and passed over, to be retried by the next
//     run, without holding up the rest. Keyring keys no subject key uses
//     any more are then deleted.
//  4. The re-seal: a subject whose key is past its cryptoperiod, or that
//     still holds records of envelope format version 1, gets a new key
//     version and every record re-sealed under it (as version 2, its owner
//     bound once checked against the pointers), and the old versions are
//     deleted, in one transaction per subject. Destroying the old key
//     version is what makes the upgrade stick: a saved copy of a version-1
//     envelope cannot be put back, because the key it opens under is gone.
//
// A run stopped at any point leaves every key and record either as it was
// or done, and the next run carries on; two runs at once (two instances)
// share the work: rows one is working on are locked, and the other skips
// them. Reveals keep working throughout.

// Rotation defaults (RotationOptions).
const (
	// DefaultCryptoperiod is how long a subject key seals new records before
	// the rotation job gives the subject a new key version (NIST SP 800-57
	// suggests up to two years for a symmetric data-encryption key; kluis
	// takes one).
	DefaultCryptoperiod = 365 * 24 * time.Hour
	// DefaultKeyringCryptoperiod is how long a keyring epoch stays active
	// before the rotation job starts the next one.
	DefaultKeyringCryptoperiod = 90 * 24 * time.Hour
	// DefaultRewrapBatch is how many subject keys one re-wrap transaction
	// takes.
	DefaultRewrapBatch = 1000
	// resealPage is how many due subjects one query lists.
	resealPage = 100
)

// Steps of a rotation, as RotationResult.Step names them.
const (
	StepRoot   = "root"
	StepEpoch  = "epoch"
	StepRewrap = "rewrap"
	StepReseal = "reseal"
	StepDone   = "done"
)

// RotationOptions tune a rotation run. Zero values take the defaults.
type RotationOptions struct {
	// Cryptoperiod: subject keys older than this get a new version.
	Cryptoperiod time.Duration
	// KeyringCryptoperiod: a keyring epoch older than this is followed by a
	// new one.
	KeyringCryptoperiod time.Duration
	// NewEpoch starts a new keyring epoch whatever the active one's age.
	NewEpoch bool
	// Batch is how many subject keys one re-wrap transaction takes.
	Batch int
	// Progress, if set, is told each step's running totals (job_runs counts).
	Progress func(rewrapped, resealedSubjects, resealedRecords int)
	// Report, if set, is told the whole result after every batch and step,
	// for `kluis keys rotate`'s progress lines and the job's metrics.
	Report func(RotationResult)
	// Owners confirms the owner of each version-1 record before the re-seal
	// binds it (see ResealSubject); banklink.Service in kluis.
	Owners OwnerPointers
}

func (o RotationOptions) withDefaults() RotationOptions {
	if o.Cryptoperiod <= 0 {
		o.Cryptoperiod = DefaultCryptoperiod
	}
	if o.KeyringCryptoperiod <= 0 {
		o.KeyringCryptoperiod = DefaultKeyringCryptoperiod
	}
	if o.Batch <= 0 {
		o.Batch = DefaultRewrapBatch
	}
	return o
}

// RotationResult counts what a rotation run did.
type RotationResult struct {
	// Step is the step the run is in (StepRoot … StepDone).
	Step string
	// RootRewrapped counts keyring and system keys rewrapped under the root
	// key's newest version.
	RootRewrapped int
	// Epoch is the active keyring epoch; NewEpoch says this run started it.
	Epoch    uint32
	NewEpoch bool
	// Rewrapped counts subject keys re-wrapped under the active epoch,
	// Migrated those of them that were wrapped by the root key before.
	Rewrapped int
	Migrated  int
	// Remaining is how many subject keys are not yet under the active
	// epoch (counted at the start of the re-wrap, less what it did since).
	Remaining int
	// RewrapFailed counts subject keys the re-wrap could not move (recorded
	// in keystore.rotation_failures; the next run retries them).
	RewrapFailed int
	// EpochsRetired counts old keyring keys deleted once unused.
	EpochsRetired    int
	ResealedSubjects int
	ResealedRecords  int
	// ResealFailed counts subjects left as they were because one of their
	// records failed its integrity check (the run goes on with the others
	// and ends with an error naming the count; the next run retries them).
	ResealFailed int
}

// Rotate runs key rotation to the end (see the steps above). It ends with
// an error when a subject could not be done (counted in the result, named in
// keystore.rotation_failures) after doing every other; a provider that
// cannot be reached stops it at once.
func (s *Store) Rotate(ctx context.Context, db *postgres.DB, opts RotationOptions) (RotationResult, error) {
	opts = opts.withDefaults()
	r := &rotation{s: s, db: db, opts: opts}
	steps := []func(context.Context) error{r.rotateRoot, r.startEpoch, r.rewrapSubjectKeys, r.retireEpochs, r.resealDue}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return r.res, fmt.Errorf("vault: rotate: %w", err)
		}
	}
	r.res.Step = StepDone
	r.report()
	var errs []error
	if r.res.RewrapFailed > 0 {
		errs = append(errs, fmt.Errorf("%d subject keys not re-wrapped; first: %w", r.res.RewrapFailed, r.firstRewrapErr))
	}
	if r.res.ResealFailed > 0 {
		errs = append(errs, fmt.Errorf("%d subjects not re-sealed (integrity); first: %w", r.res.ResealFailed, r.firstResealErr))
	}
	if len(errs) > 0 {
		return r.res, fmt.Errorf("vault: rotate: %w (keystore.rotation_failures lists them; the next run retries them)", errors.Join(errs...))
	}
	return r.res, nil
}

// rotation is one run's state.
type rotation struct {
	s    *Store
	db   *postgres.DB
	opts RotationOptions
	res  RotationResult

	firstRewrapErr, firstResealErr error
}

func (r *rotation) report() {
	if r.opts.Progress != nil {
		r.opts.Progress(r.res.Rewrapped+r.res.RootRewrapped, r.res.ResealedSubjects, r.res.ResealedRecords)
	}
	if r.opts.Report != nil {
		r.opts.Report(r.res)
	}
}

// rotateRoot is step 1: one Describe, then the keyring keys and system keys
// whose root version is not the newest are rewrapped, a table at a time.
// A provider that hides its versions (KMS: LatestVersion "") cannot say
// which keys are behind, so every key wrapped before the run began is
// rewrapped (KMS ReEncrypt moves it to the newest backing key).
func (r *rotation) rotateRoot(ctx context.Context) error {
	r.res.Step = StepRoot
	info, err := r.s.ring.provider.Describe(ctx)
	if err != nil {
		return providerError("describe root key", err)
	}
	var cutoff time.Time
	if err := r.db.Pool.QueryRow(ctx, `SELECT now()`).Scan(&cutoff); err != nil {
		return postgres.Translate(err)
	}
	tables := []struct{ sel, upd string }{{
		`SELECT epoch::text, 'keyring/v' || epoch, wrapped, root_version FROM keystore.keyring_keys
		 WHERE (root_version <> $1 OR ($1 = '' AND wrapped_at < $2)) ORDER BY epoch FOR NO KEY UPDATE SKIP LOCKED`,
		`UPDATE keystore.keyring_keys SET wrapped = $2, root_version = $3, wrapped_at = now() WHERE epoch = $1::integer`,
	}, {
		`SELECT name || '/' || version, 'system/' || name || '/v' || version, wrapped, root_version FROM keystore.system_keys
		 WHERE (root_version <> $1 OR ($1 = '' AND wrapped_at < $2)) ORDER BY name, version FOR NO KEY UPDATE SKIP LOCKED`,
		`UPDATE keystore.system_keys SET wrapped = $2, root_version = $3, wrapped_at = now() WHERE name || '/' || version = $1`,
	}}
	for _, t := range tables {
		err := r.db.InTx(ctx, func(tx pgx.Tx) error {
			n, err := r.s.ring.rewrapTable(ctx, tx, info.LatestVersion, cutoff, t.sel, t.upd)
			r.res.RootRewrapped += n
			return err
		})
		if err != nil {
			return err
		}
	}
	r.report()
	return nil
}

// rewrapTable rewraps, in one provider call where the provider batches, the
// rows selectSQL returns: (row key, provider key id, wrapped, root
// version), given the newest version and the cutoff; updateSQL takes (row
// key, wrapped, root version). The tables are small (a few keyring epochs,
// a few system keys): one transaction each.
func (kr *KeyRing) rewrapTable(ctx context.Context, tx pgx.Tx, latest string, cutoff time.Time, selectSQL, updateSQL string) (int, error) {
	rows, err := tx.Query(ctx, selectSQL, latest, cutoff)
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
	out, err := kr.provider.Rewrap(ctx, items)
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

// startEpoch is step 2: a new keyring epoch when asked for, or when the
// active one is past its cryptoperiod. Two runs starting the same epoch at
// once make one (the insert's conflict), and both go on under it.
func (r *rotation) startEpoch(ctx context.Context) error {
	r.res.Step = StepEpoch
	var active *int64
	var due bool
	err := r.db.Pool.QueryRow(ctx, `SELECT max(epoch), bool_or(created_at < now() - make_interval(secs => $1))
		FROM keystore.keyring_keys WHERE epoch = (SELECT max(epoch) FROM keystore.keyring_keys)`,
		r.opts.KeyringCryptoperiod.Seconds()).Scan(&active, &due)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("vault: read active epoch: %w", postgres.Translate(err))
	}
	next := uint32(1)
	if active != nil {
		next = uint32(*active) + 1
	}
	if active == nil || due || r.opts.NewEpoch {
		if err := createKeyringEpoch(ctx, r.db.Pool, r.s.ring.provider, next); err != nil {
			return err
		}
		r.res.NewEpoch = true
	}
	// The newest epoch, whoever made it, is the one to move keys to; its
	// key is unwrapped at its first use (one provider call per instance).
	epoch, err := r.s.ring.keyring.readActive(ctx)
	r.res.Epoch = epoch
	return err
}

// oldEpochs lists the epochs below the active one that still wrap subject
// keys; 0 stands for keys wrapped by the root key.
func (r *rotation) oldEpochs(ctx context.Context) ([]uint32, error) {
	rows, err := r.db.Pool.Query(ctx, `
		SELECT 0 WHERE EXISTS (SELECT 1 FROM keystore.subject_keys WHERE keyring_epoch IS NULL)
		UNION ALL
		SELECT epoch FROM keystore.keyring_keys k WHERE epoch < $1
		  AND EXISTS (SELECT 1 FROM keystore.subject_keys s WHERE s.keyring_epoch = k.epoch)
		ORDER BY 1`, r.res.Epoch)
	if err != nil {
		return nil, fmt.Errorf("vault: list old epochs: %w", postgres.Translate(err))
	}
	epochs, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return nil, fmt.Errorf("vault: list old epochs: %w", postgres.Translate(err))
	}
	return epochs, nil
}

// rewrapSubjectKeys is step 3: every old epoch's subject keys, batch by
// batch, moved under the active epoch.
func (r *rotation) rewrapSubjectKeys(ctx context.Context) error {
	r.res.Step = StepRewrap
	if err := r.db.Pool.QueryRow(ctx, `SELECT count(*) FROM keystore.subject_keys WHERE keyring_epoch IS NULL OR keyring_epoch < $1`,
		r.res.Epoch).Scan(&r.res.Remaining); err != nil {
		return fmt.Errorf("vault: count keys to re-wrap: %w", postgres.Translate(err))
	}
	r.report()
	epochs, err := r.oldEpochs(ctx)
	if err != nil {
		return err
	}
	for _, from := range epochs {
		for after := ""; ; {
			last, n, err := r.rewrapBatch(ctx, from, after)
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
			after = last
			r.report()
		}
	}
	return nil
}

// rewrapCandidate is one subject key the re-wrap moves.
type rewrapCandidate struct {
	id, subjectID string
	sk            storedKey
	wrapped       []byte // under the active epoch, once done
	failed        error
}

// rewrapBatch moves up to Batch keys of epoch from (0: root-wrapped) with
// ids after after, in one transaction, and returns the last id it looked
// at and how many it looked at (0: the epoch is done for this run). Rows
// another run holds are skipped (SKIP LOCKED); the update is conditional on
// the row still being in the old epoch, so no key is moved twice.
func (r *rotation) rewrapBatch(ctx context.Context, from uint32, after string) (last string, n int, err error) {
	err = r.db.InTx(ctx, func(tx pgx.Tx) error {
		cands, err := lockRewrapBatch(ctx, tx, from, after, r.opts.Batch)
		if err != nil || len(cands) == 0 {
			return err
		}
		last, n = cands[len(cands)-1].id, len(cands)
		for i := range cands {
			if err := r.rewrapOne(ctx, &cands[i]); err != nil {
				return err // the provider is gone: stop the run
			}
		}
		return r.storeRewrapped(ctx, tx, from, cands)
	})
	return last, n, err
}

// lockRewrapBatch reads and locks the next batch of one old epoch.
func lockRewrapBatch(ctx context.Context, tx pgx.Tx, from uint32, after string, batch int) ([]rewrapCandidate, error) {
	// Two statements, so that each is a plain equality on the index's
	// first column and walks it in id order.
	sql := `SELECT id, subject_id, version, wrapped, root_version FROM keystore.subject_keys
		WHERE keyring_epoch = $1 AND id > $2 ORDER BY keyring_epoch, id LIMIT $3 FOR NO KEY UPDATE SKIP LOCKED`
	args := []any{from, after, batch}
	if from == 0 {
		sql = `SELECT id, subject_id, version, wrapped, root_version FROM keystore.subject_keys
		WHERE keyring_epoch IS NULL AND id > $1 ORDER BY keyring_epoch, id LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED`
		args = args[1:]
	}
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("vault: read keys to re-wrap: %w", postgres.Translate(err))
	}
	cands, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (rewrapCandidate, error) {
		c := rewrapCandidate{sk: storedKey{epoch: from}}
		return c, row.Scan(&c.id, &c.subjectID, &c.sk.version, &c.sk.wrapped, &c.sk.rootVersion)
	})
	if err != nil {
		return nil, fmt.Errorf("vault: read keys to re-wrap: %w", postgres.Translate(err))
	}
	return cands, nil
}

// rewrapOne opens one key (locally, or through the provider for a
// root-wrapped one) and wraps it under the active epoch. A key that will
// not open is marked failed and the batch goes on; a provider or keyring
// that cannot be reached is returned, and stops the run.
func (r *rotation) rewrapOne(ctx context.Context, c *rewrapCandidate) error {
	var key []byte
	var err error
	if c.sk.epoch == 0 {
		key, err = r.s.ring.unwrapRootWrapped(ctx, c.subjectID, c.sk)
	} else {
		key, err = r.s.ring.keyring.openSubjectKey(ctx, c.subjectID, c.sk.version, c.sk.epoch, c.sk.wrapped)
	}
	if err == nil && len(key) != keySize {
		err = integrityError(errors.New("vault: unwrapped subject key is not 32 bytes"))
	}
	if err != nil {
		clear(key)
		if kluis.ErrorCode(err) == kluis.EUnavailable || ctx.Err() != nil {
			return err
		}
		c.failed = err
		return nil
	}
	defer clear(key)
	return r.s.ring.keyring.use(ctx, r.res.Epoch, func(kk []byte) error {
		c.wrapped, err = wrapSubjectKey(kk, c.subjectID, c.sk.version, r.res.Epoch, key)
		return err
	})
}

// storeRewrapped writes the batch's new wraps in one statement, records its
// failures, and clears the failures of the keys that now succeeded.
func (r *rotation) storeRewrapped(ctx context.Context, tx pgx.Tx, from uint32, cands []rewrapCandidate) error {
	var ids, done []string
	var wrapped [][]byte
	for _, c := range cands {
		if c.failed != nil {
			if err := recordFailure(ctx, tx, c.subjectID, StepRewrap, c.failed); err != nil {
				return err
			}
			r.res.RewrapFailed++
			if r.firstRewrapErr == nil {
				r.firstRewrapErr = c.failed
			}
			continue
		}
		ids, wrapped, done = append(ids, c.id), append(wrapped, c.wrapped), append(done, c.subjectID)
	}
	if len(ids) == 0 {
		return nil
	}
	tag, err := tx.Exec(ctx, `
		UPDATE keystore.subject_keys k SET wrapped = u.wrapped, keyring_epoch = $3, root_version = '', wrapped_at = now()
		FROM unnest($1::text[], $2::bytea[]) AS u(id, wrapped)
		WHERE k.id = u.id AND COALESCE(k.keyring_epoch, 0) = $4`, ids, wrapped, r.res.Epoch, from)
	if err != nil {
		return fmt.Errorf("vault: store re-wrapped keys: %w", postgres.Translate(err))
	}
	if _, err := tx.Exec(ctx, `DELETE FROM keystore.rotation_failures WHERE step = $1 AND subject_id = ANY ($2)`, StepRewrap, done); err != nil {
		return fmt.Errorf("vault: clear rotation failures: %w", postgres.Translate(err))
	}
	moved := int(tag.RowsAffected())
	r.res.Rewrapped += moved
	if from == 0 {
		r.res.Migrated += moved
	}
	r.res.Remaining = max(0, r.res.Remaining-moved)
	return nil
}

// maxFailureReason bounds rotation_failures.reason.
const maxFailureReason = 200

// recordFailure notes (or counts again) what the rotation could not do for
// a subject. The reason is the error's category and kluis's words for it,
// which never hold key material.
func recordFailure(ctx context.Context, tx pgx.Tx, subjectID, step string, cause error) error {
	reason := failureReason(cause)
	_, err := tx.Exec(ctx, `
		INSERT INTO keystore.rotation_failures (subject_id, step, reason) VALUES ($1, $2, $3)
		ON CONFLICT (subject_id, step) DO UPDATE SET reason = EXCLUDED.reason,
			attempts = keystore.rotation_failures.attempts + 1, last_failed_at = now()`, subjectID, step, reason)
	if err != nil {
		return fmt.Errorf("vault: record rotation failure: %w", postgres.Translate(err))
	}
	return nil
}

// failureReason is a bounded, secret-free line for a rotation failure: the
// error code and the innermost error's words (kluis's and the providers'
// errors name operations and codes, never key material).
func failureReason(err error) string {
	code := kluis.ErrorCode(err)
	if code == "" {
		code = "error"
	}
	inner := err
	for next := errors.Unwrap(inner); next != nil; next = errors.Unwrap(inner) {
		inner = next
	}
	reason := code + ": " + err.Error()
	if len(reason) > maxFailureReason {
		reason = code + ": " + inner.Error()
	}
	if len(reason) > maxFailureReason {
		reason = reason[:maxFailureReason]
	}
	return reason
}

// retireEpochs deletes the keyring keys of old epochs no subject key uses
// any more. A subject key being made under one at this moment (by an
// instance that has not yet noticed the new epoch) holds the foreign key:
// that epoch's delete fails and waits for the next run.
func (r *rotation) retireEpochs(ctx context.Context) error {
	rows, err := r.db.Pool.Query(ctx, `
		SELECT epoch FROM keystore.keyring_keys k WHERE epoch < $1
		AND NOT EXISTS (SELECT 1 FROM keystore.subject_keys s WHERE s.keyring_epoch = k.epoch)`, r.res.Epoch)
	if err != nil {
		return fmt.Errorf("vault: list unused epochs: %w", postgres.Translate(err))
	}
	epochs, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return fmt.Errorf("vault: list unused epochs: %w", postgres.Translate(err))
	}
	for _, e := range epochs {
		tag, err := r.db.Pool.Exec(ctx, `DELETE FROM keystore.keyring_keys WHERE epoch = $1`, e)
		if kluis.ErrorCode(postgres.Translate(err)) == kluis.EInvalid {
			continue // a foreign-key hold: still in use
		}
		if err != nil {
			return fmt.Errorf("vault: retire epoch %d: %w", e, postgres.Translate(err))
		}
		r.res.EpochsRetired += int(tag.RowsAffected())
	}
	if len(epochs) > 0 {
		// Drop the retired keys from memory now rather than at the next check.
		return r.s.ring.keyring.refresh(ctx, true)
	}
	return nil
}

// resealDue is step 4: subjects past their cryptoperiod or with version-1
// records, one transaction each, in id order, never revisited in a run. A
// subject whose records fail their integrity check is recorded and passed
// over.
func (r *rotation) resealDue(ctx context.Context) error {
	r.res.Step = StepReseal
	for after := ""; ; {
		due, err := SubjectsDueForReseal(ctx, r.db.Pool, r.opts.Cryptoperiod, after, resealPage)
		if err != nil || len(due) == 0 {
			return err
		}
		for _, subject := range due {
			after = subject
			if err := r.resealOne(ctx, subject); err != nil {
				return err
			}
		}
	}
}

func (r *rotation) resealOne(ctx context.Context, subject string) error {
	res, err := r.s.ResealSubject(ctx, r.db, subject, r.opts.Owners)
	switch kluis.ErrorCode(err) {
	case "":
		r.res.ResealedSubjects++
		r.res.ResealedRecords += res.Records
		r.report()
		return r.clearFailure(ctx, subject, StepReseal)
	case kluis.ENotFound:
		return nil // erased meanwhile: nothing left to re-seal
	case EIntegrity:
		// One subject's bad record must not hold up everyone else's.
		r.res.ResealFailed++
		if r.firstResealErr == nil {
			r.firstResealErr = err
		}
		return r.db.InTx(ctx, func(tx pgx.Tx) error { return recordFailure(ctx, tx, subject, StepReseal, err) })
	default:
		return err
	}
}

func (r *rotation) clearFailure(ctx context.Context, subject, step string) error {
	if _, err := r.db.Pool.Exec(ctx, `DELETE FROM keystore.rotation_failures WHERE subject_id = $1 AND step = $2`, subject, step); err != nil {
		return fmt.Errorf("vault: clear rotation failure: %w", postgres.Translate(err))
	}
	return nil
}

// SubjectsDueForReseal lists, in id order after the subject id after ("" to
// start), up to limit subjects whose newest key is older than cryptoperiod,
// or that still hold a version-1 record (current or pending version) whose
// owner is known (to be re-sealed as version 2). A subject whose keys are
// gone (erased) is never listed, so a run cannot loop on it. Both halves
// walk an index in subject order (subject_keys' (subject_id, version) and
// credentials_envelope_v1), so a run reads each subject once.
func SubjectsDueForReseal(ctx context.Context, q postgres.Querier, cryptoperiod time.Duration, after string, limit int) ([]string, error) {
	rows, err := q.Query(ctx, `
		SELECT subject_id FROM (
			(SELECT k.subject_id FROM keystore.subject_keys k
			WHERE k.subject_id > $2 AND k.created_at < now() - make_interval(secs => $1)
			AND NOT EXISTS (SELECT 1 FROM keystore.subject_keys n WHERE n.subject_id = k.subject_id AND n.version > k.version)
			ORDER BY k.subject_id LIMIT $3)
			UNION
			(SELECT DISTINCT c.subject_id FROM credentials c
			WHERE c.subject_id > $2 AND (get_byte(c.envelope, 0) = 1 OR get_byte(c.pending_envelope, 0) = 1) AND c.owner_type IS NOT NULL
			AND EXISTS (SELECT 1 FROM keystore.subject_keys k WHERE k.subject_id = c.subject_id)
			ORDER BY c.subject_id LIMIT $3)
		) due
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
	// The new version is made locally and wrapped under the active keyring
	// epoch: no provider call.
	key, wrapped, epoch, err := s.ring.keyring.newSubjectKey(ctx, subjectID, newVersion)
	if err != nil {
		return ResealResult{}, err
	}
	defer clear(key)
	if _, err := tx.Exec(ctx, `
		INSERT INTO keystore.subject_keys (id, subject_id, version, wrapped, root_version, keyring_epoch)
		VALUES ($1, $2, $3, $4, '', $5)`,
		kluis.NewID(PrefixSubjectKey), subjectID, newVersion, wrapped, epoch); err != nil {
		return ResealResult{}, fmt.Errorf("vault: store subject key: %w", postgres.Translate(err))
	}
	n, err := s.resealRecords(ctx, tx, subjectID, old, newVersion, key, owners)
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
		SELECT version, wrapped, root_version, COALESCE(keyring_epoch, 0) FROM keystore.subject_keys
		WHERE subject_id = $1 ORDER BY version FOR UPDATE`, subjectID)
	if err != nil {
		return nil, fmt.Errorf("vault: lock subject keys: %w", postgres.Translate(err))
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (storedKey, error) {
		var sk storedKey
		return sk, r.Scan(&sk.version, &sk.wrapped, &sk.rootVersion, &sk.epoch)
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
		if err := s.checkUnboundOwner(ctx, tx, owners, rec); err != nil {
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
func (s *Store) checkUnboundOwner(ctx context.Context, tx pgx.Tx, owners OwnerPointers, rec sealedRecord) error {
	if EnvelopeVersion(rec.envelope) != EnvelopeV1 || rec.owner.IsZero() {
		return nil
	}
	if !rec.owner.Valid() || s.kinds.ownerType(rec.kind) != rec.owner.Type {
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
