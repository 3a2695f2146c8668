package vault

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// CodeCredentialRevoked is the error of a credential whose owner withdrew
// consent at the provider: its secret is destroyed and only a tombstone is
// left, so that its ref answers "revoked" (410) rather than "unknown" (404).
const CodeCredentialRevoked = "credential_revoked" // #nosec G101 -- an error code, not a credential

// Versions says what stands behind a credential's ref: the current version's
// number, whether a pending successor is sealed (a rotation under way), and
// whether the credential is a tombstone.
type Versions struct {
	Ref     string
	Version uint32
	Pending bool
	Revoked bool
}

// CredentialVersions reads the credential's versions; FOR UPDATE when
// forUpdate, so that the caller's transaction sees them unchanged until it
// ends. An unknown ref is ENotFound.
func (s *Store) CredentialVersions(ctx context.Context, q postgres.Querier, ref string, forUpdate bool) (Versions, error) {
	if !kluis.ValidID(kluis.PrefixCredential, ref) {
		return Versions{}, kluis.Errorf(kluis.ENotFound, "not found")
	}
	sql := `SELECT version, pending_envelope IS NOT NULL, revoked_at IS NOT NULL FROM credentials WHERE ref = $1`
	if forUpdate {
		sql += ` FOR UPDATE`
	}
	v := Versions{Ref: ref}
	if err := q.QueryRow(ctx, sql, ref).Scan(&v.Version, &v.Pending, &v.Revoked); err != nil {
		return Versions{}, fmt.Errorf("vault: read credential versions: %w", postgres.Translate(err))
	}
	return v, nil
}

// SealPending seals secret as the pending successor of the credential ref,
// for the same ref, kind and subject, in the caller's transaction: the
// credential keeps its ref across the rotation, and the successor is
// committed before the current version is let go. It succeeds only while
// the credential is still at version want, has no pending version and is
// not revoked; otherwise it is EConflict and stores nothing.
func (s *Store) SealPending(ctx context.Context, tx pgx.Tx, ref string, want uint32, secret []byte) error {
	if len(secret) == 0 || len(secret) > MaxSecretSize {
		return kluis.Errorf(kluis.EInvalid, "secret is empty or too large")
	}
	var subjectID, kind string
	var owner Owner
	var version uint32
	var pending, revoked bool
	err := tx.QueryRow(ctx, `SELECT subject_id, kind, COALESCE(owner_type, ''), COALESCE(owner_id, ''), version,
		pending_envelope IS NOT NULL, revoked_at IS NOT NULL
		FROM credentials WHERE ref = $1 FOR UPDATE`, ref).Scan(&subjectID, &kind, &owner.Type, &owner.ID, &version, &pending, &revoked)
	if err != nil {
		return fmt.Errorf("vault: read credential: %w", postgres.Translate(err))
	}
	if version != want || pending || revoked {
		return kluis.Errorf(kluis.EConflict, "the credential changed; its pending version was not stored")
	}
	// The successor is bound to the credential's owner like the current
	// version (format version 2). A credential with no known owner (a
	// version-1 record no single pointer named when owners were recorded)
	// gets no successor: it would be a live token nobody may reveal.
	if !owner.Valid() || s.kinds.ownerType(kind) != owner.Type {
		return integrityError(fmt.Errorf("vault: credential %s has no owner to seal a pending version for", ref))
	}
	var envelope []byte
	var keyVersion uint32
	err = s.ring.withCurrentKey(ctx, tx, subjectID, func(v uint32, key []byte) error {
		var err error
		keyVersion = v
		envelope, err = SealEnvelope(key, Binding{SubjectID: subjectID, Ref: ref, Kind: kind, KeyVersion: v, Owner: owner}, secret)
		return err
	})
	if err != nil {
		return fmt.Errorf("vault: seal pending version: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE credentials SET pending_envelope = $2, pending_key_version = $3, pending_since = now(), updated_at = now()
		WHERE ref = $1`, ref, envelope, keyVersion); err != nil {
		return fmt.Errorf("vault: store pending version: %w", postgres.Translate(err))
	}
	return nil
}

// PromotePending makes the pending version current, in the caller's
// transaction, and returns the new version number. The old version's
// envelope is overwritten: this is where it is let go. A credential with no
// pending version is EConflict.
func (s *Store) PromotePending(ctx context.Context, tx pgx.Tx, ref string) (uint32, error) {
	var version uint32
	err := tx.QueryRow(ctx, `UPDATE credentials SET envelope = pending_envelope, key_version = pending_key_version,
		version = version + 1, pending_envelope = NULL, pending_key_version = NULL, pending_since = NULL, updated_at = now()
		WHERE ref = $1 AND pending_envelope IS NOT NULL AND revoked_at IS NULL
		RETURNING version`, ref).Scan(&version)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, kluis.Errorf(kluis.EConflict, "the credential has no pending version")
	}
	if err != nil {
		return 0, fmt.Errorf("vault: promote pending version: %w", postgres.Translate(err))
	}
	return version, nil
}

// OpenPending opens the credential's pending version. A credential without
// one is ENotFound; the other errors are Open's.
func (s *Store) OpenPending(ctx context.Context, q postgres.Querier, ref string) (Credential, error) {
	if !kluis.ValidID(kluis.PrefixCredential, ref) {
		return Credential{}, kluis.Errorf(kluis.ENotFound, "not found")
	}
	c := Credential{Ref: ref}
	var envelope, wrapped []byte
	var keyVersion *uint32
	var rootVer *string
	var epoch uint32
	err := q.QueryRow(ctx, `
		SELECT c.subject_id, c.kind, COALESCE(c.owner_type, ''), COALESCE(c.owner_id, ''),
			c.pending_key_version, c.pending_envelope, k.wrapped, k.root_version, COALESCE(k.keyring_epoch, 0)
		FROM credentials c
		LEFT JOIN keystore.subject_keys k ON k.subject_id = c.subject_id AND k.version = c.pending_key_version
		WHERE c.ref = $1`, ref).Scan(&c.SubjectID, &c.Kind, &c.Owner.Type, &c.Owner.ID, &keyVersion, &envelope, &wrapped, &rootVer, &epoch)
	if err != nil {
		return Credential{}, fmt.Errorf("vault: read pending version: %w", postgres.Translate(err))
	}
	if keyVersion == nil || envelope == nil || wrapped == nil || rootVer == nil {
		return Credential{}, kluis.Errorf(kluis.ENotFound, "not found")
	}
	c.KeyVersion = *keyVersion
	sk := storedKey{version: c.KeyVersion, wrapped: wrapped, rootVersion: *rootVer, epoch: epoch}
	b := Binding{SubjectID: c.SubjectID, Ref: ref, Kind: c.Kind, KeyVersion: c.KeyVersion, Owner: c.Owner}
	err = s.ring.withStoredKey(ctx, c.SubjectID, sk, func(key []byte) error {
		var err error
		c.Secret, err = OpenEnvelope(key, b, envelope)
		return err
	})
	if errors.Is(err, ErrMalformedEnvelope) || errors.Is(err, ErrEnvelopeAuth) {
		return Credential{}, integrityError(fmt.Errorf("vault: open pending version of %s: %w", ref, err))
	}
	if err != nil {
		return Credential{}, fmt.Errorf("vault: open pending version: %w", err)
	}
	c.OwnerBound = EnvelopeVersion(envelope) >= EnvelopeV2
	return c, nil
}

// OpenPendingOwned is OpenPending for a caller that followed owner's
// pointer to ref: a pending version that belongs to anyone else is
// EIntegrity (see OpenOwned).
func (s *Store) OpenPendingOwned(ctx context.Context, q postgres.Querier, owner Owner, ref string) (Credential, error) {
	c, err := s.OpenPending(ctx, q, ref)
	if err != nil {
		return Credential{}, err
	}
	return s.ownedBy(c, owner)
}

// Revoke destroys the credential's secret (every version, and its blind
// index) in the caller's transaction and leaves a tombstone, so that its
// ref answers CodeCredentialRevoked from then on. The caller revokes the
// secret at the provider first, where it can. Revoking a tombstone again
// changes nothing; an unknown ref is ENotFound.
func (s *Store) Revoke(ctx context.Context, tx pgx.Tx, ref string) error {
	if !kluis.ValidID(kluis.PrefixCredential, ref) {
		return kluis.Errorf(kluis.ENotFound, "not found")
	}
	tag, err := tx.Exec(ctx, `UPDATE credentials SET envelope = NULL, pending_envelope = NULL, pending_key_version = NULL,
		pending_since = NULL, blind_index = NULL, revoked_at = COALESCE(revoked_at, now()), updated_at = now()
		WHERE ref = $1`, ref)
	if err != nil {
		return fmt.Errorf("vault: revoke credential: %w", postgres.Translate(err))
	}
	if tag.RowsAffected() == 0 {
		return kluis.Errorf(kluis.ENotFound, "not found")
	}
	return nil
}

// revokedError is what opening a tombstone answers.
func revokedError() error {
	return kluis.Errorf(CodeCredentialRevoked, "the credential was revoked: its owner withdrew consent at the provider")
}
