// Package localkek is the development root-key provider: a 32-byte AES-256
// key kept in a local file (base64, standard encoding, on one line, mode 0600
// or stricter). Data keys are wrapped with AES-256-GCM under it.
//
// It exists so that kluis runs on a laptop and in tests without KMS or Vault;
// production refuses to start with it (KLUIS_ENV=production). The key never
// leaves this process, but it also sits on disk in the clear, which is why.
package localkek

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/kluis-dev/kluis/vault"
)

const (
	// keySize is the root key's length: AES-256.
	keySize = 32
	// dataKeySize is the length of a generated data key: AES-256.
	dataKeySize = 32
	// formatV1 is the first byte of every wrapped key this package makes:
	// version 1 is formatV1 || nonce (12 bytes) || AES-256-GCM(data key).
	formatV1 byte = 1
	// rootVersion is the only version a local key has: it cannot rotate in
	// place (a new key is a new file and a new fingerprint).
	rootVersion = "1"
	// fingerprintDomain separates the fingerprint hash from any other use of
	// SHA-256 over the same key, so the fingerprint says nothing reusable.
	fingerprintDomain = "kluis/localkek/fingerprint/v1\x00"
	// maxFileSize bounds what New reads: a key file is 44 characters and a
	// newline; anything much larger is not a key file.
	maxFileSize = 128
)

// providerName is what Describe reports as RootKeyInfo.Provider.
const providerName = "local"

// Provider wraps data keys under a root key read from a local file. It is
// safe for concurrent use.
type Provider struct {
	aead        cipher.AEAD
	fingerprint string
}

// New reads the root key from path and returns a provider that uses it. The
// file must hold exactly one line: the base64 (standard encoding) of 32 bytes,
// optionally followed by a newline. A file that group or others can read or
// write is refused: the root key must be readable only by its owner.
func New(path string) (*Provider, error) {
	key, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return newFromKey(key)
}

// newFromKey builds a provider from raw key bytes; the caller zeroes key.
func newFromKey(key []byte) (*Provider, error) {
	if len(key) != keySize {
		return nil, fmt.Errorf("localkek: root key must be %d bytes", keySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("localkek: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("localkek: %w", err)
	}
	return &Provider{aead: aead, fingerprint: fingerprint(key)}, nil
}

// readKeyFile opens path, checks its mode and shape, and returns the decoded
// key. Everything it read is zeroed before it returns.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path) // #nosec G304 -- KLUIS_LOCAL_KEK_FILE, the operator's setting; its mode and shape are checked below
	if err != nil {
		return nil, fmt.Errorf("localkek: open key file: %w", err)
	}
	defer f.Close()
	// Stat the open file, not the path, so that the mode checked is the
	// mode of the file read.
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("localkek: stat key file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("localkek: key file %s is not a regular file", path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("localkek: key file %s has mode %#o: it must be readable by its owner only (chmod 600 %s)", path, perm, path)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	defer clear(raw)
	if err != nil {
		return nil, fmt.Errorf("localkek: read key file: %w", err)
	}
	if len(raw) > maxFileSize {
		return nil, fmt.Errorf("localkek: key file %s is not a key file: too large", path)
	}
	return decodeKey(raw, path)
}

// decodeKey parses the file's content: one line of strict standard base64
// that decodes to exactly 32 bytes. Error messages never quote the content.
func decodeKey(raw []byte, path string) ([]byte, error) {
	line := raw
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line = line[:n-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
	}
	if len(line) == 0 || bytes.ContainsAny(line, "\r\n \t") {
		return nil, fmt.Errorf("localkek: key file %s must hold one line: base64 of %d bytes", path, keySize)
	}
	key := make([]byte, base64.StdEncoding.DecodedLen(len(line)))
	n, err := base64.StdEncoding.Strict().Decode(key, line)
	if err != nil || n != keySize {
		clear(key)
		return nil, fmt.Errorf("localkek: key file %s must hold base64 (standard encoding) of exactly %d bytes", path, keySize)
	}
	return key[:n], nil
}

// fingerprint names a key without revealing it: the first 8 bytes of a
// domain-separated SHA-256, in hex.
func fingerprint(key []byte) string {
	h := sha256.New()
	h.Write([]byte(fingerprintDomain))
	h.Write(key)
	sum := h.Sum(nil)
	return hex.EncodeToString(sum[:8])
}

// Generate writes a fresh random root key to path with mode 0600, for
// `kluis dev`. It refuses to overwrite an existing file: losing a root key
// loses every data key wrapped under it.
func Generate(path string) (err error) {
	key := make([]byte, keySize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("localkek: generate key: %w", err)
	}
	line := make([]byte, base64.StdEncoding.EncodedLen(keySize)+1)
	defer clear(line)
	base64.StdEncoding.Encode(line, key)
	line[len(line)-1] = '\n'

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) // #nosec G304 -- a path the operator (kluis dev, a test) names; O_EXCL never overwrites
	if err != nil {
		return fmt.Errorf("localkek: create key file: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("localkek: close key file: %w", cerr)
		}
		if err != nil {
			if rerr := os.Remove(path); rerr != nil {
				err = errors.Join(err, fmt.Errorf("localkek: remove partial key file: %w", rerr))
			}
		}
	}()
	// The umask may only remove bits, but make the mode explicit anyway.
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("localkek: chmod key file: %w", err)
	}
	if _, err := f.Write(line); err != nil {
		return fmt.Errorf("localkek: write key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("localkek: sync key file: %w", err)
	}
	return nil
}

// GenerateDataKey makes a fresh random 256-bit data key and wraps it, bound
// to keyID.
func (p *Provider) GenerateDataKey(ctx context.Context, keyID string) (vault.DataKey, error) {
	if err := ctxErr(ctx); err != nil {
		return vault.DataKey{}, err
	}
	plaintext := make([]byte, dataKeySize)
	if _, err := rand.Read(plaintext); err != nil {
		return vault.DataKey{}, fmt.Errorf("localkek: generate data key: %w", vault.ErrKeyUnavailable)
	}
	wrapped, err := p.wrap(keyID, plaintext)
	if err != nil {
		clear(plaintext)
		return vault.DataKey{}, err
	}
	return vault.DataKey{Plaintext: plaintext, Wrapped: wrapped}, nil
}

// Unwrap opens a wrapped data key bound to keyID. A key that was tampered
// with, bound to another keyID, or wrapped under another root key is refused.
func (p *Provider) Unwrap(ctx context.Context, keyID string, wrapped vault.WrappedKey) ([]byte, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	return p.open(keyID, wrapped)
}

// Rewrap re-encrypts each key under a fresh nonce. A local key has only one
// version, so this changes nothing but the ciphertext; it exists so that
// `kluis keys rotate` runs the same way on every provider.
func (p *Provider) Rewrap(ctx context.Context, keys []vault.RewrapItem) ([]vault.WrappedKey, error) {
	out := make([]vault.WrappedKey, len(keys))
	for i, k := range keys {
		if err := ctxErr(ctx); err != nil {
			return nil, err
		}
		plaintext, err := p.open(k.KeyID, k.Wrapped)
		if err != nil {
			return nil, fmt.Errorf("rewrap item %d: %w", i, err)
		}
		out[i], err = p.wrap(k.KeyID, plaintext)
		clear(plaintext)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Describe reports the key's fingerprint and its only version.
func (p *Provider) Describe(ctx context.Context) (vault.RootKeyInfo, error) {
	if err := ctxErr(ctx); err != nil {
		return vault.RootKeyInfo{}, err
	}
	return vault.RootKeyInfo{Provider: providerName, KeyID: p.fingerprint, LatestVersion: rootVersion}, nil
}

// wrap seals plaintext under the root key, bound to keyID.
func (p *Provider) wrap(keyID string, plaintext []byte) (vault.WrappedKey, error) {
	nonceSize := p.aead.NonceSize()
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(plaintext)+p.aead.Overhead())
	out[0] = formatV1
	if _, err := rand.Read(out[1:]); err != nil {
		return vault.WrappedKey{}, fmt.Errorf("localkek: nonce: %w", vault.ErrKeyUnavailable)
	}
	out = p.aead.Seal(out, out[1:1+nonceSize], plaintext, additionalData(formatV1, keyID))
	return vault.WrappedKey{Ciphertext: out, RootVersion: rootVersion}, nil
}

// open checks the format and opens a wrapped key bound to keyID.
func (p *Provider) open(keyID string, wrapped vault.WrappedKey) ([]byte, error) {
	ct := wrapped.Ciphertext
	nonceSize := p.aead.NonceSize()
	if len(ct) < 1+nonceSize+p.aead.Overhead() {
		return nil, fmt.Errorf("localkek: wrapped key too short: %w", vault.ErrKeyRefused)
	}
	if ct[0] != formatV1 {
		return nil, fmt.Errorf("localkek: unknown wrapped key format %d: %w", ct[0], vault.ErrKeyRefused)
	}
	if wrapped.RootVersion != "" && wrapped.RootVersion != rootVersion {
		return nil, fmt.Errorf("localkek: unknown root key version: %w", vault.ErrKeyRefused)
	}
	plaintext, err := p.aead.Open(nil, ct[1:1+nonceSize], ct[1+nonceSize:], additionalData(ct[0], keyID))
	if err != nil {
		// Wrong root key, wrong keyID, or tampered: GCM cannot tell which.
		return nil, fmt.Errorf("localkek: wrapped key does not open under this root key and key id: %w", vault.ErrKeyRefused)
	}
	return plaintext, nil
}

// additionalData binds a wrapped key to its format version and its keyID, so
// that a wrapped key copied to another identity does not open.
func additionalData(version byte, keyID string) []byte {
	ad := make([]byte, 0, 1+len(keyID))
	ad = append(ad, version)
	return append(ad, keyID...)
}

// ctxErr turns a done context into ErrKeyUnavailable, so that a caller whose
// deadline passed gets the same answer from every provider.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("localkek: %w: %w", vault.ErrKeyUnavailable, err)
	}
	return nil
}

var _ vault.KeyProvider = (*Provider)(nil)
