package vault

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
)

// The sealed-record envelope (docs/ENVELOPE.md is the specification; keep
// the two in step). Versions 1 and 2 share one layout:
//
//	offset  size    field
//	0       1       format version (0x01 or 0x02)
//	1       4       subject key version, uint32 big-endian, >= 1
//	5       12      nonce, random per seal
//	17      n + 16  AES-256-GCM ciphertext of the n-byte secret, then the tag
//
// The additional authenticated data is not stored: it is rebuilt from the
// record's place (Binding) when opening, so that a ciphertext moved to another
// row, subject, kind, key version or (version 2) owner fails to open. Version
// 2 differs from version 1 only in its AAD, which also binds the owner.
const (
	// EnvelopeV1 is the first format: its AAD binds no owner. It is still
	// opened (records sealed before owners were bound) and written only when
	// a record with no known owner is re-sealed under a new key version.
	EnvelopeV1 byte = 0x01
	// EnvelopeV2 is the format SealEnvelope writes: its AAD also binds the
	// object that owns the record (an item or an account).
	EnvelopeV2 byte = 0x02

	// MaxSecretSize bounds a sealed secret (a JSON object of a few fields).
	MaxSecretSize = 64 << 10

	keySize        = 32
	nonceSize      = 12
	tagSize        = 16
	headerSize     = 1 + 4 + nonceSize
	minEnvelopeLen = headerSize + 1 + tagSize
	maxEnvelopeLen = headerSize + MaxSecretSize + tagSize
	// maxBindingField bounds each AAD field; identifiers and kinds are short.
	maxBindingField = 255
)

// aadLabel separates envelope AAD from any other use of a subject key.
const aadLabel = "kluis/vault/credential"

// ErrMalformedEnvelope is returned (wrapped) for bytes that are not a
// well-formed envelope of a known version.
var ErrMalformedEnvelope = errors.New("vault: malformed envelope")

// ErrEnvelopeAuth is returned when a well-formed envelope does not
// authenticate: tampered bytes, the wrong key, or the wrong binding (a
// ciphertext moved to another row, subject or owner).
var ErrEnvelopeAuth = errors.New("vault: envelope does not authenticate")

// Binding is where a sealed record lives. All of it goes into the AAD, so a
// ciphertext opens only in the place it was sealed for. Owner is bound from
// format version 2 on; version 1 ignores it.
type Binding struct {
	SubjectID  string
	Ref        string
	Kind       string
	KeyVersion uint32
	Owner      Owner
}

// Envelope is a parsed envelope. Ciphertext includes the GCM tag.
type Envelope struct {
	Version    byte
	KeyVersion uint32
	Nonce      [nonceSize]byte
	Ciphertext []byte
}

// ParseEnvelope checks data strictly and splits it into its fields. It refuses
// an unknown version, key version 0, and any length outside the format's
// bounds. Ciphertext aliases data.
func ParseEnvelope(data []byte) (Envelope, error) {
	if len(data) < 1 {
		return Envelope{}, fmt.Errorf("%w: empty", ErrMalformedEnvelope)
	}
	if data[0] != EnvelopeV1 && data[0] != EnvelopeV2 {
		return Envelope{}, fmt.Errorf("%w: unknown format version %d", ErrMalformedEnvelope, data[0])
	}
	if len(data) < minEnvelopeLen {
		return Envelope{}, fmt.Errorf("%w: %d bytes is too short", ErrMalformedEnvelope, len(data))
	}
	if len(data) > maxEnvelopeLen {
		return Envelope{}, fmt.Errorf("%w: %d bytes is too long", ErrMalformedEnvelope, len(data))
	}
	env := Envelope{Version: data[0], KeyVersion: binary.BigEndian.Uint32(data[1:5])}
	if env.KeyVersion == 0 {
		return Envelope{}, fmt.Errorf("%w: key version 0", ErrMalformedEnvelope)
	}
	copy(env.Nonce[:], data[5:headerSize])
	env.Ciphertext = data[headerSize:]
	return env, nil
}

// Marshal returns the envelope's bytes.
func (e Envelope) Marshal() []byte {
	out := make([]byte, headerSize, headerSize+len(e.Ciphertext))
	out[0] = e.Version
	binary.BigEndian.PutUint32(out[1:5], e.KeyVersion)
	copy(out[5:headerSize], e.Nonce[:])
	return append(out, e.Ciphertext...)
}

// SealEnvelope encrypts secret under the 32-byte key for the place b, owner
// included, as format version 2 with a fresh random nonce. The key version
// written is b.KeyVersion.
func SealEnvelope(key []byte, b Binding, secret []byte) ([]byte, error) {
	return sealVersion(key, EnvelopeV2, b, freshNonce(), secret)
}

// sealEnvelopeV1 writes format version 1 (no owner bound). Only the re-seal
// of a record whose owner kluis does not know uses it: such a record cannot
// be given an owner, but must move to its subject's new key version.
func sealEnvelopeV1(key []byte, b Binding, secret []byte) ([]byte, error) {
	return sealVersion(key, EnvelopeV1, b, freshNonce(), secret)
}

func freshNonce() [nonceSize]byte {
	var nonce [nonceSize]byte
	// crypto/rand.Read never fails on supported platforms (Go 1.24+).
	_, _ = rand.Read(nonce[:])
	return nonce
}

// sealVersion seals as format version v with a chosen nonce: production
// code always passes a fresh one; the known-answer tests pass their own.
func sealVersion(key []byte, v byte, b Binding, nonce [nonceSize]byte, secret []byte) ([]byte, error) {
	if len(secret) == 0 {
		return nil, errors.New("vault: empty secret")
	}
	if len(secret) > MaxSecretSize {
		return nil, fmt.Errorf("vault: secret of %d bytes exceeds %d", len(secret), MaxSecretSize)
	}
	aad, err := b.aad(v)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, headerSize, headerSize+len(secret)+tagSize)
	out[0] = v
	binary.BigEndian.PutUint32(out[1:5], b.KeyVersion)
	copy(out[5:headerSize], nonce[:])
	return aead.Seal(out, nonce[:], secret, aad), nil
}

// OpenEnvelope parses data strictly and decrypts it under key for the place
// b. It fails with ErrMalformedEnvelope for bad bytes and ErrEnvelopeAuth for
// anything that does not authenticate, including an envelope whose key
// version is not b.KeyVersion and a version-2 envelope whose owner is not
// b.Owner. A version-1 envelope opens whatever b.Owner says: the caller
// must check that owner some other way (EnvelopeVersion tells which).
func OpenEnvelope(key []byte, b Binding, data []byte) ([]byte, error) {
	env, err := ParseEnvelope(data)
	if err != nil {
		return nil, err
	}
	if env.KeyVersion != b.KeyVersion {
		// The AAD would catch it too; saying so early keeps the error clear.
		return nil, fmt.Errorf("%w: key version mismatch", ErrEnvelopeAuth)
	}
	aad, err := b.aad(env.Version)
	if err != nil {
		// No record was ever sealed for a place that cannot be encoded (an
		// owner missing from a version-2 record's row, say).
		return nil, fmt.Errorf("%w: %v", ErrEnvelopeAuth, err)
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	secret, err := aead.Open(nil, env.Nonce[:], env.Ciphertext, aad)
	if err != nil {
		return nil, ErrEnvelopeAuth
	}
	return secret, nil
}

// EnvelopeVersion returns the format version of a stored envelope (its first
// byte), or 0 for none.
func EnvelopeVersion(data []byte) byte {
	if len(data) == 0 {
		return 0
	}
	return data[0]
}

// aad encodes the binding for format version v: the version byte, the key
// version, then the label, subject id, ref and kind, and (version 2) the
// owner's type and id, each prefixed by its length as uint16 big-endian so
// that no field's bytes can slide into its neighbour's.
func (b Binding) aad(v byte) ([]byte, error) {
	if b.KeyVersion == 0 {
		return nil, errors.New("vault: key version 0 in binding")
	}
	var fields []string
	switch v {
	case EnvelopeV1:
		fields = []string{aadLabel, b.SubjectID, b.Ref, b.Kind}
	case EnvelopeV2:
		fields = []string{aadLabel, b.SubjectID, b.Ref, b.Kind, b.Owner.Type, b.Owner.ID}
	default:
		return nil, fmt.Errorf("%w: unknown format version %d", ErrMalformedEnvelope, v)
	}
	n := 1 + 4
	for _, f := range fields {
		if f == "" {
			return nil, errors.New("vault: empty field in binding")
		}
		if len(f) > maxBindingField {
			return nil, errors.New("vault: binding field too long")
		}
		n += 2 + len(f)
	}
	out := make([]byte, 0, n)
	out = append(out, v)
	out = binary.BigEndian.AppendUint32(out, b.KeyVersion)
	for _, f := range fields {
		out = binary.BigEndian.AppendUint16(out, uint16(len(f)))
		out = append(out, f...)
	}
	return out, nil
}

// newGCM builds AES-256-GCM for one operation. The AEAD is not kept: its key
// schedule could not be zeroed when the subject key leaves the cache.
func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != keySize {
		return nil, errors.New("vault: data key is not 32 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, errors.New("vault: aes key setup failed")
	}
	return cipher.NewGCM(block)
}
