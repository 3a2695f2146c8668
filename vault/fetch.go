package vault

import (
	"context"
	"errors"
	"fmt"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// Fetched is a credential read in one query with everything needed to
// judge it and then open it: what Describe returns, plus its sealed
// record and its subject key's row. Nothing in it is in the clear: the
// record is sealed and the subject key wrapped. OpenFetched opens it
// without reading the database again.
type Fetched struct {
	Described
	envelope []byte
	key      storedKey
	keyFound bool // false: the subject's keys were destroyed (erasure)
	revoked  bool // a tombstone (Revoke)
}

// String shows the credential's identifiers only (never its sealed
// record), so that %v and %+v are safe and short.
func (f Fetched) String() string {
	return fmt.Sprintf("Fetched{Ref:%s Kind:%s SubjectID:%s KeyVersion:%d Owner:%s}", f.Ref, f.Kind, f.SubjectID, f.KeyVersion, f.Owner)
}

// GoString makes %#v as safe as %v.
func (f Fetched) GoString() string { return f.String() }

// Fetch reads the credential ref, its subject's app and user key, and its
// subject key's row in one round trip, so that a reveal is judged (kind,
// app, owner) and opened from one read of one snapshot. An unknown or
// malformed ref is ENotFound; a destroyed subject key or a tombstone is
// found here and refused by OpenFetched.
func (s *Store) Fetch(ctx context.Context, ref string) (Fetched, error) {
	if !kluis.ValidID(kluis.PrefixCredential, ref) {
		return Fetched{}, kluis.Errorf(kluis.ENotFound, "not found")
	}
	f := Fetched{Described: Described{CredentialInfo: CredentialInfo{Ref: ref}}}
	var (
		wrapped []byte
		rootVer *string
	)
	err := s.db.Pool.QueryRow(ctx, `
		SELECT c.kind, c.subject_id, c.key_version, COALESCE(c.owner_type, ''), COALESCE(c.owner_id, ''), c.created_at,
			s.app_id, s.external_id, c.envelope, c.revoked_at IS NOT NULL,
			k.wrapped, k.root_version, COALESCE(k.keyring_epoch, 0)
		FROM credentials c
		JOIN subjects s ON s.id = c.subject_id
		LEFT JOIN keystore.subject_keys k ON k.subject_id = c.subject_id AND k.version = c.key_version
		WHERE c.ref = $1`, ref).Scan(&f.Kind, &f.SubjectID, &f.KeyVersion, &f.Owner.Type, &f.Owner.ID, &f.CreatedAt,
		&f.App, &f.ExternalSubjectID, &f.envelope, &f.revoked,
		&wrapped, &rootVer, &f.key.epoch)
	if err != nil {
		return Fetched{}, fmt.Errorf("vault: fetch credential: %w", postgres.Translate(err))
	}
	f.ExternalSubjectID = kluis.UserKey(f.App, f.ExternalSubjectID)
	if wrapped != nil && rootVer != nil {
		f.keyFound = true
		f.key.version, f.key.wrapped, f.key.rootVersion = f.KeyVersion, wrapped, *rootVer
	}
	return f, nil
}

// OpenFetched opens what Fetch read, as Open would have: a tombstone is
// CodeCredentialRevoked, a destroyed subject key ENotFound, a record that
// does not authenticate where it lay EIntegrity, a key provider (or
// keyring key) that cannot be reached EUnavailable. When owner is not
// zero the caller followed owner's pointer to the credential, and a
// credential of anyone else is EIntegrity (as OpenOwned). A subject key
// under a keyring epoch opens locally, with no database read.
func (s *Store) OpenFetched(ctx context.Context, f Fetched, owner Owner) (Credential, error) {
	if f.revoked {
		return Credential{}, revokedError()
	}
	if !f.keyFound {
		return Credential{}, kluis.Errorf(kluis.ENotFound, "not found")
	}
	c := Credential{Ref: f.Ref, Kind: f.Kind, SubjectID: f.SubjectID, KeyVersion: f.KeyVersion, Owner: f.Owner}
	b := Binding{SubjectID: c.SubjectID, Ref: c.Ref, Kind: c.Kind, KeyVersion: c.KeyVersion, Owner: c.Owner}
	err := s.ring.withStoredKey(ctx, c.SubjectID, f.key, func(key []byte) error {
		var err error
		c.Secret, err = OpenEnvelope(key, b, f.envelope)
		return err
	})
	if errors.Is(err, ErrMalformedEnvelope) || errors.Is(err, ErrEnvelopeAuth) {
		return Credential{}, integrityError(fmt.Errorf("vault: open credential %s: %w", c.Ref, err))
	}
	if err != nil {
		return Credential{}, fmt.Errorf("vault: open credential: %w", err)
	}
	c.OwnerBound = EnvelopeVersion(f.envelope) >= EnvelopeV2
	if owner.IsZero() {
		return c, nil
	}
	return s.ownedBy(c, owner)
}
