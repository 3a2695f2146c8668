package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// Credential is an opened credential. Secret is the plaintext (JSON): the
// caller zeroes it (Zero) as soon as it is done. Printing or logging a
// Credential never shows the secret.
type Credential struct {
	Ref        string
	Kind       string
	SubjectID  string
	KeyVersion uint32
	// Owner is the item or account the credential belongs to. OwnerBound
	// says the record's AAD proved it (format version 2); a version-1
	// record's owner is only what its row says, to be checked against the
	// pointer that led to it.
	Owner      Owner
	OwnerBound bool
	Secret     []byte
}

// String shows the credential without its secret, so that %v and %+v are
// safe.
func (c Credential) String() string {
	return fmt.Sprintf("Credential{Ref:%s Kind:%s SubjectID:%s KeyVersion:%d Owner:%s Secret:[redacted]}", c.Ref, c.Kind, c.SubjectID, c.KeyVersion, c.Owner)
}

// GoString makes %#v as safe as %v.
func (c Credential) GoString() string { return c.String() }

// LogValue keeps the secret out of slog output.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("ref", c.Ref), slog.String("kind", c.Kind), slog.String("subject_id", c.SubjectID),
		slog.String("owner", c.Owner.String()))
}

// Zero overwrites the secret.
func (c *Credential) Zero() { clear(c.Secret) }

// CredentialInfo describes a stored credential without opening it.
type CredentialInfo struct {
	Ref        string
	Kind       string
	SubjectID  string
	KeyVersion uint32
	// Owner is what the row says owns the credential (zero when it names
	// none); not proved until the record is opened.
	Owner     Owner
	CreatedAt time.Time
}

// Store seals credentials into the credentials table and opens them again.
// It is safe for concurrent use.
type Store struct {
	db    *postgres.DB
	ring  *KeyRing
	sys   *SystemKeys
	kinds *Kinds
}

// Kinds is the registry of credential kinds the store seals.
func (s *Store) Kinds() *Kinds { return s.kinds }

// NewStore returns a credential store for the registered kinds (a kind
// not in kinds is refused). sys gives the blind-index key; it may be nil
// if no caller seals with a blind index.
func NewStore(db *postgres.DB, ring *KeyRing, sys *SystemKeys, kinds *Kinds) *Store {
	if ring != nil && db != nil {
		ring.keyring.setDB(db.Aside()) // on the side pool: these reads happen while callers hold Pool connections
	}
	return &Store{db: db, ring: ring, sys: sys, kinds: kinds}
}

// Seal encrypts secret (JSON) for the subject under the subject's current
// key, bound to its owner (the item or account that will point at it, whose
// row the caller inserts in the same transaction), and inserts it in the
// caller's transaction, so that the caller's audit entry commits or rolls
// back with it. blindIndexInput, when not empty, is the value (an account
// number, an ID number) whose blind index, as the kind's registration says
// (Kind.Index), is stored for FindByBlindIndex. It returns the new credential's ref. When the key
// provider cannot be reached it fails with kluis EUnavailable and stores
// nothing; a subject whose erasure runs is
// kluis ESubjectErasing (FenceSubject, held until tx ends).
func (s *Store) Seal(ctx context.Context, tx pgx.Tx, owner Owner, subjectID, kind string, secret []byte, blindIndexInput string) (string, error) {
	if _, ok := s.kinds.Lookup(kind); !ok {
		return "", kluis.Errorf(kluis.EInvalid, "unknown credential kind")
	}
	if !owner.Valid() || s.kinds.ownerType(kind) != owner.Type {
		return "", kluis.Errorf(kluis.EInvalid, "invalid credential owner")
	}
	if !kluis.ValidID(PrefixSubject, subjectID) {
		return "", kluis.Errorf(kluis.EInvalid, "invalid subject")
	}
	if len(secret) == 0 || len(secret) > MaxSecretSize {
		return "", kluis.Errorf(kluis.EInvalid, "secret is empty or too large")
	}
	var blindIndex []byte
	if blindIndexInput != "" {
		if s.sys == nil {
			return "", kluis.Errorf(kluis.EInternal, "internal error")
		}
		if blindIndex = s.kinds.blindIndex(s.sys, kind, blindIndexInput); blindIndex == nil {
			return "", kluis.Errorf(kluis.EInvalid, "invalid account number")
		}
	}
	// Before a key is made or used: an erasure approved meanwhile must not
	// find a record (or a new subject key) it does not know of.
	if err := FenceSubject(ctx, tx, subjectID); err != nil {
		if kluis.ErrorCode(err) == kluis.ENotFound {
			return "", kluis.Errorf(kluis.EInvalid, "invalid subject")
		}
		return "", err
	}
	ref := kluis.NewID(kluis.PrefixCredential)
	var envelope []byte
	var keyVersion uint32
	err := s.ring.withCurrentKey(ctx, tx, subjectID, func(version uint32, key []byte) error {
		var err error
		keyVersion = version
		envelope, err = SealEnvelope(key, Binding{SubjectID: subjectID, Ref: ref, Kind: kind, KeyVersion: version, Owner: owner}, secret)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("vault: seal credential: %w", err)
	}
	_, err = tx.Exec(ctx, `
		INSERT INTO credentials (ref, subject_id, kind, key_version, envelope, blind_index, owner_type, owner_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		ref, subjectID, kind, keyVersion, envelope, blindIndex, owner.Type, owner.ID)
	if err != nil {
		return "", fmt.Errorf("vault: store credential: %w", postgres.Translate(err))
	}
	return ref, nil
}

// Open reads and decrypts the credential ref (its current version). An
// unknown ref, and a credential whose subject key was destroyed (erased),
// are ENotFound; a tombstone (Revoke) is CodeCredentialRevoked; a record
// that does not authenticate (tampered, moved from its row, or its owner
// column edited) is EIntegrity; a key provider that cannot be reached is
// EUnavailable. The credential names its owner; whoever followed a pointer
// to ref uses OpenOwned instead, which checks it.
func (s *Store) Open(ctx context.Context, ref string) (Credential, error) {
	return s.OpenIn(ctx, s.db.Pool, ref)
}

// OpenOwned is Open for a caller that followed owner's pointer to ref: a
// credential that belongs to anyone else (the pointer was made to point at
// another owner's credential) is EIntegrity, and its secret is zeroed
// before it is returned to no one. For a version-1 record, whose AAD binds
// no owner, the owner its row names is what is checked.
func (s *Store) OpenOwned(ctx context.Context, owner Owner, ref string) (Credential, error) {
	return s.OpenOwnedIn(ctx, s.db.Pool, owner, ref)
}

// OpenOwnedIn is OpenOwned on the caller's pool or transaction.
func (s *Store) OpenOwnedIn(ctx context.Context, q postgres.Querier, owner Owner, ref string) (Credential, error) {
	c, err := s.OpenIn(ctx, q, ref)
	if err != nil {
		return Credential{}, err
	}
	return s.ownedBy(c, owner)
}

// ownedBy returns c when it belongs to owner; otherwise it zeroes c's
// secret and returns EIntegrity.
func (s *Store) ownedBy(c Credential, owner Owner) (Credential, error) {
	if c.Owner != owner || s.kinds.ownerType(c.Kind) != owner.Type {
		c.Zero()
		return Credential{}, integrityError(fmt.Errorf("vault: %s points at credential %s of %s", owner, c.Ref, c.Owner))
	}
	return c, nil
}

// OpenIn is Open on the caller's pool or transaction.
func (s *Store) OpenIn(ctx context.Context, q postgres.Querier, ref string) (Credential, error) {
	if !kluis.ValidID(kluis.PrefixCredential, ref) {
		return Credential{}, kluis.Errorf(kluis.ENotFound, "not found")
	}
	var (
		c        = Credential{Ref: ref}
		envelope []byte
		sk       storedKey
		wrapped  []byte
		rootVer  *string
		revoked  bool
	)
	// One round trip: the record and its key's row. A missing key row means
	// the subject's keys were destroyed.
	err := q.QueryRow(ctx, `
		SELECT c.subject_id, c.kind, c.key_version, COALESCE(c.owner_type, ''), COALESCE(c.owner_id, ''),
			c.envelope, k.wrapped, k.root_version, COALESCE(k.keyring_epoch, 0), c.revoked_at IS NOT NULL
		FROM credentials c
		LEFT JOIN keystore.subject_keys k ON k.subject_id = c.subject_id AND k.version = c.key_version
		WHERE c.ref = $1`, ref).Scan(&c.SubjectID, &c.Kind, &c.KeyVersion, &c.Owner.Type, &c.Owner.ID,
		&envelope, &wrapped, &rootVer, &sk.epoch, &revoked)
	if err != nil {
		return Credential{}, fmt.Errorf("vault: read credential: %w", postgres.Translate(err))
	}
	if revoked {
		return Credential{}, revokedError()
	}
	if wrapped == nil || rootVer == nil {
		return Credential{}, kluis.Errorf(kluis.ENotFound, "not found")
	}
	sk.version, sk.wrapped, sk.rootVersion = c.KeyVersion, wrapped, *rootVer
	b := Binding{SubjectID: c.SubjectID, Ref: ref, Kind: c.Kind, KeyVersion: c.KeyVersion, Owner: c.Owner}
	err = s.ring.withStoredKey(ctx, c.SubjectID, sk, func(key []byte) error {
		var err error
		c.Secret, err = OpenEnvelope(key, b, envelope)
		return err
	})
	if errors.Is(err, ErrMalformedEnvelope) || errors.Is(err, ErrEnvelopeAuth) {
		return Credential{}, integrityError(fmt.Errorf("vault: open credential %s: %w", ref, err))
	}
	if err != nil {
		return Credential{}, fmt.Errorf("vault: open credential: %w", err)
	}
	c.OwnerBound = EnvelopeVersion(envelope) >= EnvelopeV2
	return c, nil
}

// Destroy deletes the credential ref, every version of it (a pending one
// too) or its tombstone, in the caller's transaction; an unknown ref is
// ENotFound. A caller destroying a provider token revokes it at the provider
// with every live version first (CredentialVersions, OpenPending).
func (s *Store) Destroy(ctx context.Context, tx pgx.Tx, ref string) error {
	if !kluis.ValidID(kluis.PrefixCredential, ref) {
		return kluis.Errorf(kluis.ENotFound, "not found")
	}
	tag, err := tx.Exec(ctx, `DELETE FROM credentials WHERE ref = $1`, ref)
	if err != nil {
		return fmt.Errorf("vault: destroy credential: %w", postgres.Translate(err))
	}
	if tag.RowsAffected() == 0 {
		return kluis.Errorf(kluis.ENotFound, "not found")
	}
	return nil
}

// DestroySubjectCredentials deletes every credential of the subject in the
// caller's transaction (erasure, after DestroySubjectKeys) and returns how
// many it deleted.
func (s *Store) DestroySubjectCredentials(ctx context.Context, tx pgx.Tx, subjectID string) (int, error) {
	tag, err := tx.Exec(ctx, `DELETE FROM credentials WHERE subject_id = $1`, subjectID)
	if err != nil {
		return 0, fmt.Errorf("vault: destroy credentials: %w", postgres.Translate(err))
	}
	return int(tag.RowsAffected()), nil
}

// FindByBlindIndex lists the credentials of the kind whose blind index is
// that of accountNumber, oldest first, without opening any. It finds across
// subjects: callers that must stay within one subject filter on SubjectID.
func (s *Store) FindByBlindIndex(ctx context.Context, q postgres.Querier, kind, accountNumber string) ([]CredentialInfo, error) {
	if _, ok := s.kinds.Lookup(kind); !ok {
		return nil, kluis.Errorf(kluis.EInvalid, "unknown credential kind")
	}
	if s.sys == nil {
		return nil, kluis.Errorf(kluis.EInternal, "internal error")
	}
	idx := s.kinds.blindIndex(s.sys, kind, accountNumber)
	if idx == nil {
		return nil, kluis.Errorf(kluis.EInvalid, "invalid account number")
	}
	rows, err := q.Query(ctx, `
		SELECT ref, kind, subject_id, key_version, COALESCE(owner_type, ''), COALESCE(owner_id, ''), created_at FROM credentials
		WHERE kind = $1 AND blind_index = $2 ORDER BY created_at, ref`, kind, idx)
	if err != nil {
		return nil, fmt.Errorf("vault: find credentials: %w", postgres.Translate(err))
	}
	infos, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (CredentialInfo, error) {
		var ci CredentialInfo
		err := r.Scan(&ci.Ref, &ci.Kind, &ci.SubjectID, &ci.KeyVersion, &ci.Owner.Type, &ci.Owner.ID, &ci.CreatedAt)
		return ci, err
	})
	if err != nil {
		return nil, fmt.Errorf("vault: find credentials: %w", postgres.Translate(err))
	}
	return infos, nil
}

// BlindIndexOf returns the stored blind index of the credential ref (the
// keyed HMAC of its account number), or nil when it has none or is gone.
// It opens nothing, so callers may count by account number (verification
// limits) without a key.
func (s *Store) BlindIndexOf(ctx context.Context, q postgres.Querier, ref string) ([]byte, error) {
	if ref == "" {
		return nil, nil
	}
	var idx []byte
	err := q.QueryRow(ctx, `SELECT blind_index FROM credentials WHERE ref = $1`, ref).Scan(&idx)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("vault: read blind index: %w", postgres.Translate(err))
	}
	return idx, nil
}
