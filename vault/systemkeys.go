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
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// Names of the system keys the vault's own functions use (blind indexes,
// Pseudonym, SignAuditHead). Every other part names its own keys
// (verification.SystemKey, banklink.SystemKey, idempotency.SystemKey,
// hosted.SystemKey) and cmd/kluis gathers them, as it gathers credential
// kinds: the vault loads any name it is given and knows none of theirs.
const (
	// SystemKeyBlindIndex keys the blind indexes of the credential kinds
	// that have one (Kind.Index).
	SystemKeyBlindIndex = "blind-index"
	// SystemKeyAuditPseudonym keys the pseudonyms audit entries carry in
	// place of personal data.
	SystemKeyAuditPseudonym = "audit-pseudonym"
	// SystemKeyAuditHead signs the audit chain's anchored heads.
	SystemKeyAuditHead = "audit-head"
)

// DefaultSystemKeys are the keys LoadSystemKeys loads when given no names,
// and the ones named here: a caller that names keys of features adds these
// (cmd/kluis: vault.DefaultSystemKeys and each feature's SystemKeys()).
var DefaultSystemKeys = []string{SystemKeyBlindIndex, SystemKeyAuditPseudonym, SystemKeyAuditHead}

// Domain-separation labels, so that one key's MACs for one purpose are never
// valid for another.
const (
	// Blind indexes take their labels from the kinds that have them
	// (Kind.Index.Label, under "kluis/blind-index/").
	labelPseudonym = "kluis/audit-pseudonym/v1"
	labelMAC       = "kluis/mac/v1"
	labelAuditHead = "kluis/audit-head/v1"
)

// systemKey is one unwrapped system key and when the provider last
// confirmed it (unwrapped its stored row). A key dropped past its bound
// keeps its version with a nil key.
type systemKey struct {
	version     uint32
	key         []byte
	confirmedAt time.Time
}

// SystemKeys holds kluis's own HMAC keys, unwrapped at start and kept in
// memory. Like keyring keys (docs/ENVELOPE.md), each is confirmed with the
// provider again at least every Recheck (KLUIS_KEYRING_RECHECK): past that
// bound it is zeroed and dropped, and whatever needs it answers 503 until
// the provider unwraps it again; a key the provider refuses is dropped at
// once. RunRecheck confirms the keys at half their bound; a use past the
// bound tries once too (one attempt at a time, at most one a second). It
// is safe for concurrent use.
type SystemKeys struct {
	mu   sync.RWMutex
	keys map[string]systemKey

	db       postgres.Querier
	provider KeyProvider
	opts     KeyringOptions

	refreshMu   sync.Mutex // one confirmation at a time
	lastTry     time.Time  // under refreshMu
	providerHit atomic.Uint64
}

// SystemKeyOptions tune the system keys; zero values take the defaults.
type SystemKeyOptions struct {
	// Recheck is how long a system key is used without the provider
	// confirming it (DefaultKeyringRecheck).
	Recheck time.Duration
	// Clock tells the time; tests inject their own.
	Clock kluis.Clock
}

// LoadSystemKeys reads the newest version of each named key from
// keystore.system_keys and unwraps it; a name with no key yet gets version 1
// from the provider, stored wrapped. Two instances starting at once make one
// key (ON CONFLICT), and both use it. With no names, DefaultSystemKeys. The
// keys are confirmed every DefaultKeyringRecheck (LoadSystemKeysWith). A
// name given twice (two features naming one stored key) is loaded once.
func LoadSystemKeys(ctx context.Context, db *postgres.DB, provider KeyProvider, names ...string) (*SystemKeys, error) {
	return LoadSystemKeysWith(ctx, db, provider, SystemKeyOptions{}, names...)
}

// LoadSystemKeysWith is LoadSystemKeys with options (KLUIS_KEYRING_RECHECK).
func LoadSystemKeysWith(ctx context.Context, db *postgres.DB, provider KeyProvider, opts SystemKeyOptions, names ...string) (*SystemKeys, error) {
	if len(names) == 0 {
		names = DefaultSystemKeys
	}
	s := &SystemKeys{keys: make(map[string]systemKey, len(names)), db: db.Aside(), provider: provider,
		opts: KeyringOptions{Recheck: opts.Recheck, Clock: opts.Clock}.withDefaults()}
	for _, name := range names {
		if _, done := s.keys[name]; done {
			continue
		}
		k, err := loadSystemKey(ctx, db.Pool, provider, name)
		s.providerHit.Add(1)
		if err != nil {
			s.Close()
			return nil, err
		}
		k.confirmedAt = s.opts.Clock.Now()
		s.keys[name] = k
	}
	return s, nil
}

// systemKeyRetryEvery is how often a use past the bound may try the
// provider again (the recheck loop ticks as often).
const systemKeyRetryEvery = time.Second

// systemKeyConfirmTimeout bounds a confirmation tried from a use (MAC has
// no context of its own).
const systemKeyConfirmTimeout = 5 * time.Second

// RunRecheck confirms the system keys at half their bound, and drops the
// ones past it, every second until ctx ends (kluis serve runs it).
func (s *SystemKeys) RunRecheck(ctx context.Context) {
	t := time.NewTicker(systemKeyRetryEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.expire()
			if s.due() {
				_ = s.confirm(ctx) // its outcome shows in Ready and in uses
			}
		}
	}
}

// Ready is nil when every system key was confirmed within its bound; past
// it, EUnavailable (503), after one attempt to confirm them.
func (s *SystemKeys) Ready(ctx context.Context) error {
	if s.stale() == "" {
		return nil
	}
	if err := s.confirm(ctx); err != nil {
		return err
	}
	if name := s.stale(); name != "" {
		return systemKeyUnavailable(name, nil)
	}
	return nil
}

// ProviderCalls is how many provider calls loading and confirming the
// system keys made (for tests and the benchmarks).
func (s *SystemKeys) ProviderCalls() uint64 { return s.providerHit.Load() }

// stale names a key past its bound (or dropped), or "".
func (s *SystemKeys) stale() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	now := s.opts.Clock.Now()
	for name, k := range s.keys {
		if k.key == nil || now.Sub(k.confirmedAt) >= s.opts.Recheck {
			return name
		}
	}
	return ""
}

// due reports whether a key is at half its bound or dropped.
func (s *SystemKeys) due() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	now := s.opts.Clock.Now()
	for _, k := range s.keys {
		if k.key == nil || now.Sub(k.confirmedAt) >= s.opts.Recheck/2 {
			return true
		}
	}
	return false
}

// expire zeroes and drops every key past its bound.
func (s *SystemKeys) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Clock.Now()
	for name, k := range s.keys {
		if k.key != nil && now.Sub(k.confirmedAt) >= s.opts.Recheck {
			clear(k.key)
			k.key = nil
			s.keys[name] = k
		}
	}
}

// confirm has the provider unwrap each key's stored row again (the row
// root rotation rewrapped, so a retired root version is never needed) and
// installs the result: confirmed keys are fresh again, a key the provider
// refuses is zeroed and dropped at once, one it cannot be asked about
// stays until its bound. An attempt within a second of the last one is
// not made (a provider that is down is not asked by every
// request). It returns the first error.
func (s *SystemKeys) confirm(ctx context.Context) error {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	now := s.opts.Clock.Now()
	if !s.lastTry.IsZero() && now.Sub(s.lastTry) < systemKeyRetryEvery {
		// Tried within the second (perhaps by whoever this caller waited
		// for): its outcome stands.
		if name := s.stale(); name != "" {
			return systemKeyUnavailable(name, nil)
		}
		return nil
	}
	s.lastTry = now
	if s.db == nil {
		return kluis.Errorf(kluis.EInternal, "internal error")
	}
	s.mu.RLock()
	names := make([]string, 0, len(s.keys))
	for name := range s.keys {
		names = append(names, name)
	}
	s.mu.RUnlock()
	var firstErr error
	for _, name := range names {
		s.mu.RLock()
		version := s.keys[name].version
		s.mu.RUnlock()
		k, err := readSystemKey(ctx, s.db, s.provider, name, version)
		s.providerHit.Add(1)
		s.install(name, k, err)
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return systemKeyUnavailable("", firstErr)
	}
	return nil
}

// install puts a confirmed key in place of name's (zeroing the old one),
// or drops name's key when the provider refused it.
func (s *SystemKeys) install(name string, k systemKey, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.keys[name]
	switch {
	case err == nil:
		clear(old.key)
		k.confirmedAt = s.opts.Clock.Now()
		s.keys[name] = k
	case !errors.Is(err, ErrKeyUnavailable) && kluis.ErrorCode(err) != kluis.EUnavailable:
		clear(old.key)
		old.key = nil
		s.keys[name] = old
	}
}

// systemKeyUnavailable is the 503 of a system key the provider has not
// confirmed within its bound.
func systemKeyUnavailable(name string, cause error) error {
	if cause == nil {
		cause = fmt.Errorf("vault: system key %q not confirmed by the key provider within its bound", name)
	}
	if kluis.ErrorCode(cause) == kluis.EUnavailable {
		return cause
	}
	return kluis.Unavailable("key provider", cause)
}

func systemKeyID(name string, version uint32) string {
	return fmt.Sprintf("system/%s/v%d", name, version)
}

func loadSystemKey(ctx context.Context, q postgres.Querier, provider KeyProvider, name string) (systemKey, error) {
	for attempt := 0; attempt < 2; attempt++ {
		k, err := readSystemKey(ctx, q, provider, name, 0)
		if err == nil || !errors.Is(err, pgx.ErrNoRows) {
			return k, err
		}
		k, created, err := createSystemKey(ctx, q, provider, name)
		if err != nil || created {
			return k, err
		}
	}
	return systemKey{}, kluis.Errorf(kluis.EInternal, "internal error")
}

// readSystemKey reads the named key's version (the newest for 0) and has
// the provider unwrap it; a missing row is pgx.ErrNoRows. A confirmation
// reads the version in use, so that a key's MACs never change under a
// running process.
func readSystemKey(ctx context.Context, q postgres.Querier, provider KeyProvider, name string, version uint32) (systemKey, error) {
	var sk storedKey
	err := q.QueryRow(ctx, `
		SELECT version, wrapped, root_version FROM keystore.system_keys
		WHERE name = $1 AND ($2::bigint = 0 OR version = $2::bigint) ORDER BY version DESC LIMIT 1`, name, int64(version)).
		Scan(&sk.version, &sk.wrapped, &sk.rootVersion)
	if errors.Is(err, pgx.ErrNoRows) {
		return systemKey{}, err
	}
	if err != nil {
		return systemKey{}, fmt.Errorf("vault: read system key %s: %w", name, postgres.Translate(err))
	}
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

// withKey calls fn with the named key under a read lock (a confirmation
// that replaces and zeroes it waits for fn): fn uses the key at once and
// keeps nothing. A name not loaded is an error naming it (a name is not a
// secret). A key past its recheck bound, or refused by the provider, is
// tried once more (at most one attempt a second) and is otherwise
// EUnavailable: work that needs it answers 503.
func (s *SystemKeys) withKey(name string, fn func(k systemKey)) error {
	for attempt := 0; ; attempt++ {
		s.mu.RLock()
		k, ok := s.keys[name]
		if ok && k.key != nil && s.opts.Clock.Now().Sub(k.confirmedAt) < s.opts.Recheck {
			fn(k)
			s.mu.RUnlock()
			return nil
		}
		s.mu.RUnlock()
		switch {
		case !ok:
			return fmt.Errorf("vault: system key %q not loaded", name)
		case attempt > 0:
			return systemKeyUnavailable(name, nil)
		}
		ctx, cancel := context.WithTimeout(context.Background(), systemKeyConfirmTimeout)
		err := s.confirm(ctx)
		cancel()
		if err != nil {
			return err
		}
	}
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
	var m []byte
	if err := s.withKey(name, func(k systemKey) { m = macWith(k, label, parts...) }); err != nil {
		return nil, err
	}
	return m, nil
}

// SignAuditHead signs an audit chain head (msg is its canonical encoding)
// with HMAC-SHA256 under the audit-head key: "v<key version>:" and the MAC
// in unpadded base64url. A MAC is enough here: the key exists in the clear
// only in kluis's memory, unwrapped by the key provider, so nobody who can
// only write the database (its owner included) can make one, and kluis is
// what checks heads (`kluis audit verify --head`).
func (s *SystemKeys) SignAuditHead(msg []byte) (string, error) {
	var sig string
	err := s.withKey(SystemKeyAuditHead, func(k systemKey) {
		sig = fmt.Sprintf("v%d:%s", k.version, base64.RawURLEncoding.EncodeToString(macWith(k, labelAuditHead, msg)))
	})
	return sig, err
}

// CheckAuditHead checks a signature SignAuditHead made, in constant time.
// Its error says why the signature does not verify, never anything secret.
func (s *SystemKeys) CheckAuditHead(msg []byte, sig string) error {
	var (
		keyVersion uint32
		want       []byte
	)
	err := s.withKey(SystemKeyAuditHead, func(k systemKey) {
		keyVersion, want = k.version, macWith(k, labelAuditHead, msg)
	})
	if err != nil {
		return err
	}
	version, mac, ok := strings.Cut(sig, ":")
	got, decErr := base64.RawURLEncoding.DecodeString(mac)
	switch {
	case !ok || decErr != nil || len(got) != sha256.Size:
		return errors.New("it is not a kluis head signature")
	case version != fmt.Sprintf("v%d", keyVersion):
		return fmt.Errorf("it names another version of the audit-head key than v%d", keyVersion)
	case !hmac.Equal(got, want):
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
