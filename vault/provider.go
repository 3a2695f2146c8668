// Package vault holds kluis's key hierarchy: the root-key provider interface,
// subject data keys, the sealed-record envelope, and the credential store.
// The root key never leaves its provider (AWS KMS, Vault Transit, or the local
// development key); kluis sees only data keys, and stores them only wrapped.
package vault

import (
	"context"
	"errors"
	"fmt"
)

// Errors a KeyProvider returns, wrapped with %w so that callers can tell them
// apart with errors.Is. Any provider error that is not ErrKeyUnavailable is
// treated as a refusal (the provider answered, and said no).
var (
	// ErrKeyUnavailable: the provider could not be reached, timed out, is
	// sealed, or throttled us. Callers fail closed with 503 and Retry-After.
	ErrKeyUnavailable = errors.New("vault: key provider unavailable")
	// ErrKeyRefused: the provider answered and refused: access denied, key
	// disabled or pending deletion, or a wrapped key it cannot decrypt
	// (tampered, wrong key, wrong encryption context).
	ErrKeyRefused = errors.New("vault: key provider refused")
)

// DataKey is a fresh AES-256 data key: Plaintext is 32 bytes and must be
// zeroed by the caller when done; Wrapped is the same key encrypted under the
// root key, safe to store.
type DataKey struct {
	Plaintext []byte
	Wrapped   WrappedKey
}

// WrappedKey is a data key encrypted under the root key, as stored in the key
// store. RootVersion is the root key version that wrapped it, as the provider
// names it ("" where the provider does not expose versions, as in KMS).
type WrappedKey struct {
	Ciphertext  []byte
	RootVersion string
}

// RootKeyInfo describes the root key: its provider-side identity (key ARN,
// Transit key name, local key fingerprint) and newest version.
type RootKeyInfo struct {
	Provider      string // "local", "awskms" or "transit"
	KeyID         string
	LatestVersion string
}

// KeyProvider is the root key, held by KMS, Vault Transit or a local file.
// keyID names the data key being made or opened (a subject key's identity,
// never personal data); providers that support it bind the wrapped key to it
// (KMS encryption context), so that a wrapped key moved to another identity
// does not unwrap.
//
// Every method returns ErrKeyUnavailable or ErrKeyRefused (wrapped) on
// failure, and honours ctx's deadline.
type KeyProvider interface {
	// GenerateDataKey makes a fresh 256-bit data key under the root key's
	// newest version.
	GenerateDataKey(ctx context.Context, keyID string) (DataKey, error)
	// Unwrap decrypts a wrapped data key and returns its 32 plaintext bytes.
	Unwrap(ctx context.Context, keyID string, wrapped WrappedKey) ([]byte, error)
	// Rewrap re-encrypts wrapped data keys under the root key's newest version
	// without kluis seeing the plaintext; batched where the provider allows.
	// The result has one entry per input, in order.
	Rewrap(ctx context.Context, keys []RewrapItem) ([]WrappedKey, error)
	// Describe returns the root key's identity and newest version; /readyz
	// uses it to tell whether the provider is usable.
	Describe(ctx context.Context) (RootKeyInfo, error)
}

// RewrapItem is one data key to rewrap, with the identity it is bound to.
type RewrapItem struct {
	KeyID   string
	Wrapped WrappedKey
}

// ProviderError is a provider's failure in words that are safe to log: the
// provider, the operation and the error code or failure kind, never the
// SDK's or server's message (which may quote the request), key material or
// ciphertext. It unwraps to its sentinel (ErrKeyUnavailable or ErrKeyRefused)
// and, for a done context, to the context's error.
type ProviderError struct {
	Provider string
	Op       string
	What     string
	Sentinel error
	CtxErr   error
}

func (e *ProviderError) Error() string {
	return fmt.Sprintf("%s: %s: %s: %v", e.Provider, e.Op, e.What, e.Sentinel)
}

// Unwrap gives errors.Is the sentinel and the context's error.
func (e *ProviderError) Unwrap() []error {
	if e.CtxErr != nil {
		return []error{e.Sentinel, e.CtxErr}
	}
	return []error{e.Sentinel}
}
