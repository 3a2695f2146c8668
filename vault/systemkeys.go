package vault

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// Names of the system keys kluis uses.
const (
	// SystemKeyBlindIndex keys the blind indexes of the credential kinds
	// that have one (Kind.Index).
	SystemKeyBlindIndex = "blind-index"
	// SystemKeyAuditPseudonym keys the pseudonyms audit entries carry in
	// place of personal data.
	SystemKeyAuditPseudonym = "audit-pseudonym"
	// SystemKeyVerification keys the HMACs of micro-deposit amounts and
	// verification codes.
	SystemKeyVerification = "verification"
	// SystemKeyIdempotency keys the Idempotency-Key rows: the caller's and
	// key's hashes, the request fingerprints (which would otherwise let a
	// copy of the table test guesses of a request's body, such as an
	// account number) and the keys that seal stored answers.
	SystemKeyIdempotency = "idempotency"
	// SystemKeyAuditHead signs the audit chain's anchored heads.
	SystemKeyAuditHead = "audit-head"
	// SystemKeyHostedPage keys the hashes of hosted pages' page and form
	// tokens (docs/HOSTED.md): a copy of the table cannot test guesses.
	SystemKeyHostedPage = "hosted-page"
)

// DefaultSystemKeys are the keys LoadSystemKeys loads when given no names.
var DefaultSystemKeys = []string{SystemKeyBlindIndex, SystemKeyAuditPseudonym, SystemKeyVerification, SystemKeyIdempotency, SystemKeyAuditHead, SystemKeyHostedPage}

// Domain-separation labels, so that one key's MACs for one purpose are never
// valid for another.
const (
	// Blind indexes take their labels from the kinds that have them
	// (Kind.Index.Label, under "kluis/blind-index/").
	labelPseudonym = "kluis/audit-pseudonym/v1"
	labelMAC       = "kluis/mac/v1"
	labelAuditHead = "kluis/audit-head/v1"
)

// systemKey is one unwrapped system key.
type systemKey struct {
	version uint32
	key     []byte
}

// SystemKeys holds kluis's own HMAC keys, unwrapped at start and kept in
// memory for the life of the process. It is safe for concurrent use.
type SystemKeys struct {
	mu   sync.RWMutex
	keys map[string]systemKey
}

// LoadSystemKeys reads the newest version of each named key from
// keystore.system_keys and unwraps it; a name with no key yet gets version 1
// from the provider, stored wrapped. Two instances starting at once make one
// key (ON CONFLICT), and both use it. With no names, DefaultSystemKeys.
func LoadSystemKeys(ctx context.Context, db *postgres.DB, provider KeyProvider, names ...string) (*SystemKeys, error) {
	if len(names) == 0 {
		names = DefaultSystemKeys
	}
	s := &SystemKeys{keys: make(map[string]systemKey, len(names))}
	for _, name := range names {
		k, err := loadSystemKey(ctx, db.Pool, provider, name)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.keys[name] = k
	}
	return s, nil
}

func systemKeyID(name string, version uint32) string {
	return fmt.Sprintf("system/%s/v%d", name, version)
}

func loadSystemKey(ctx context.Context, q postgres.Querier, provider KeyProvider, name string) (systemKey, error) {
	for attempt := 0; attempt < 2; attempt++ {
		var sk storedKey
		err := q.QueryRow(ctx, `
			SELECT version, wrapped, root_version FROM keystore.system_keys
			WHERE name = $1 ORDER BY version DESC LIMIT 1`, name).
			Scan(&sk.version, &sk.wrapped, &sk.rootVersion)
		if err == nil {
			key, err := provider.Unwrap(ctx, systemKeyID(name, sk.version), WrappedKey{Ciphertext: sk.wrapped, RootVersion: sk.rootVersion})
			if err != nil {
				return systemKey{}, providerError("unwrap system key "+name, err)
			}
			if len(key) != keySize {
				clear(key)
				return systemKey{}, kluis.Errorf(kluis.EInternal, "internal error")
			}
			return systemKey{version: sk.version, key: key}, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return systemKey{}, fmt.Errorf("vault: read system key %s: %w", name, postgres.Translate(err))
		}
		k, created, err := createSystemKey(ctx, q, provider, name)
		if err != nil || created {
			return k, err
		}
	}
	return systemKey{}, kluis.Errorf(kluis.EInternal, "internal error")
}

func createSystemKey(ctx context.Context, q postgres.Querier, provider KeyProvider, name string) (systemKey, bool, error) {
	dk, err := provider.GenerateDataKey(ctx, systemKeyID(name, 1))
	if err != nil {
		return systemKey{}, false, providerError("generate system key "+name, err)
	}
	if len(dk.Plaintext) != keySize {
		clear(dk.Plaintext)
		return systemKey{}, false, kluis.Errorf(kluis.EInternal, "internal error")
	}
	tag, err := q.Exec(ctx, `
		INSERT INTO keystore.system_keys (name, version, wrapped, root_version)
		VALUES ($1, 1, $2, $3) ON CONFLICT (name, version) DO NOTHING`,
		name, dk.Wrapped.Ciphertext, dk.Wrapped.RootVersion)
	if err != nil {
		clear(dk.Plaintext)
		return systemKey{}, false, fmt.Errorf("vault: store system key %s: %w", name, postgres.Translate(err))
	}
	if tag.RowsAffected() == 0 {
		clear(dk.Plaintext)
		return systemKey{}, false, nil
	}
	return systemKey{version: 1, key: dk.Plaintext}, true, nil
}

// key returns the named key, or an error naming the missing key (a name is
// not a secret).
func (s *SystemKeys) key(name string) (systemKey, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.keys[name]
	if !ok {
		return systemKey{}, fmt.Errorf("vault: system key %q not loaded", name)
	}
	return k, nil
}

// macWith is HMAC-SHA256 under k of the label and parts, each prefixed by
// its length (uint32 big-endian) so that parts cannot shift.
func macWith(k systemKey, label string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, k.key)
	var n [4]byte
	for _, p := range append([][]byte{[]byte(label)}, parts...) {
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		m.Write(n[:])
		m.Write(p)
	}
	return m.Sum(nil)
}

// mac is HMAC-SHA256 under the named key of the label and parts, each
// prefixed by its length (uint32 big-endian) so that parts cannot shift.
func (s *SystemKeys) mac(name, label string, parts ...[]byte) ([]byte, error) {
	k, err := s.key(name)
	if err != nil {
		return nil, err
	}
	return macWith(k, label, parts...), nil
}

// SignAuditHead signs an audit chain head (msg is its canonical encoding)
// with HMAC-SHA256 under the audit-head key: "v<key version>:" and the MAC
// in unpadded base64url. A MAC is enough here: the key exists in the clear
// only in kluis's memory, unwrapped by the key provider, so nobody who can
// only write the database (its owner included) can make one, and kluis is
// what checks heads (`kluis audit verify --head`).
func (s *SystemKeys) SignAuditHead(msg []byte) (string, error) {
	k, err := s.key(SystemKeyAuditHead)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("v%d:%s", k.version, base64.RawURLEncoding.EncodeToString(macWith(k, labelAuditHead, msg))), nil
}

// CheckAuditHead checks a signature SignAuditHead made, in constant time.
// Its error says why the signature does not verify, never anything secret.
func (s *SystemKeys) CheckAuditHead(msg []byte, sig string) error {
	k, err := s.key(SystemKeyAuditHead)
	if err != nil {
		return err
	}
	version, mac, ok := strings.Cut(sig, ":")
	got, decErr := base64.RawURLEncoding.DecodeString(mac)
	switch {
	case !ok || decErr != nil || len(got) != sha256.Size:
		return errors.New("it is not a kluis head signature")
	case version != fmt.Sprintf("v%d", k.version):
		return fmt.Errorf("it names another version of the audit-head key than v%d", k.version)
	case !hmac.Equal(got, macWith(k, labelAuditHead, msg)):
		return errors.New("it was not made by this kluis's audit-head key for this head")
	}
	return nil
}

// MAC returns HMAC-SHA256 under the named system key of parts (length-
// prefixed, and separated from the blind-index and pseudonym MACs). Feature
// packages use it for values they compare but must not store, such as
// micro-deposit amounts; compare results with hmac.Equal.
func (s *SystemKeys) MAC(name string, parts ...[]byte) ([]byte, error) {
	return s.mac(name, labelMAC, parts...)
}

// Pseudonym returns a stable, keyed pseudonym for a value of the given kind
// (for example kind "subject" and the subject id): 32 hex characters (128
// bits) of HMAC-SHA256 under the audit-pseudonym key. Without the key, a
// pseudonym cannot be linked to its value, even by someone who can guess the
// values. It returns "" when the key is not loaded.
func (s *SystemKeys) Pseudonym(kind, value string) string {
	m, err := s.mac(SystemKeyAuditPseudonym, labelPseudonym, []byte(kind), []byte(value))
	if err != nil {
		return ""
	}
	return hex.EncodeToString(m[:16])
}

// Close zeroes every key; the SystemKeys is unusable afterwards.
func (s *SystemKeys) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, k := range s.keys {
		clear(k.key)
		delete(s.keys, name)
	}
}
