package jwtauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/MicahParks/jwkset"
)

// Bounds on the keys kluis trusts. RSA below 2048 bits is breakable; far above
// 8192 bits it only costs CPU on every verification.
const (
	minRSABits = 2048
	maxRSABits = 8192
	// maxJWKSBytes bounds a JWKS file or response; real ones are a few KiB.
	maxJWKSBytes = 1 << 20
)

// errSymmetric marks an oct key: it is dropped silently, because a shared
// secret in a JWKS must never verify anything (HS256 with a published key is
// the classic forgery).
var errSymmetric = errors.New("symmetric key")

// publicSigningKey returns a copy of j that holds only its public key, or an
// error saying why kluis refuses it. Only RSA (2048 to 8192 bits) and EC P-256
// signing keys with a kid pass.
func publicSigningKey(j jwkset.JWK) (jwkset.JWK, error) {
	m := j.Marshal()
	if m.KTY == jwkset.KtyOct {
		return jwkset.JWK{}, errSymmetric
	}
	if m.KID == "" {
		return jwkset.JWK{}, errors.New("key has no kid")
	}
	if m.USE != "" && m.USE != jwkset.UseSig {
		return jwkset.JWK{}, errors.New(`key "use" is not "sig"`)
	}
	if len(m.KEYOPS) > 0 && !slices.Contains(m.KEYOPS, jwkset.KeyOpsVerify) {
		return jwkset.JWK{}, errors.New(`key "key_ops" does not include "verify"`)
	}
	pub, err := checkPublicKey(j.Key(), m.ALG)
	if err != nil {
		return jwkset.JWK{}, err
	}
	// Rebuilt from the public key alone, so that private material a careless
	// JWKS carried is not kept in memory.
	return jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{
		ALG: m.ALG, KID: m.KID, USE: m.USE, KEYOPS: m.KEYOPS,
	}})
}

// checkPublicKey returns the public half of key if its type, size and alg are
// ones kluis verifies with.
func checkPublicKey(key any, alg jwkset.ALG) (any, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return checkPublicKey(&k.PublicKey, alg)
	case *ecdsa.PrivateKey:
		return checkPublicKey(&k.PublicKey, alg)
	case *rsa.PublicKey:
		if alg != "" && alg != jwkset.AlgRS256 {
			return nil, fmt.Errorf("RSA key with alg %q, only RS256 is accepted", alg)
		}
		if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return nil, fmt.Errorf("RSA key of %d bits, want %d to %d", bits, minRSABits, maxRSABits)
		}
		if k.E < 3 || k.E%2 == 0 || k.E > 1<<31-1 {
			return nil, errors.New("RSA key has an unusable public exponent")
		}
		return k, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("EC key not on P-256")
		}
		if alg != "" && alg != jwkset.AlgES256 {
			return nil, fmt.Errorf("EC key with alg %q, only ES256 is accepted", alg)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("key type %T is not accepted, only RSA and EC P-256", key)
	}
}

// signingKeyStore is a jwkset memory store that keeps only keys that pass
// publicSigningKey. jwkset's HTTP refresh writes each fetched set through
// KeyReplaceAll, so a refused key never reaches the verifier whichever way it
// arrived.
type signingKeyStore struct {
	*jwkset.MemoryJWKSet
	// refused is told about each refused key (not the oct ones), for a log line.
	refused func(kid string, err error)
}

func newSigningKeyStore(refused func(kid string, err error)) *signingKeyStore {
	return &signingKeyStore{MemoryJWKSet: jwkset.NewMemoryStorage(), refused: refused}
}

// KeyReplaceAll replaces the set with the acceptable keys among given.
func (s *signingKeyStore) KeyReplaceAll(ctx context.Context, given []jwkset.JWK) error {
	keep := make([]jwkset.JWK, 0, len(given))
	for _, j := range given {
		pub, err := publicSigningKey(j)
		if err != nil {
			if !errors.Is(err, errSymmetric) && s.refused != nil {
				s.refused(j.Marshal().KID, err)
			}
			continue
		}
		keep = append(keep, pub)
	}
	return s.MemoryJWKSet.KeyReplaceAll(ctx, keep)
}

// KeyWrite adds j if it is acceptable and refuses it otherwise.
func (s *signingKeyStore) KeyWrite(ctx context.Context, j jwkset.JWK) error {
	pub, err := publicSigningKey(j)
	if err != nil {
		return err
	}
	return s.MemoryJWKSet.KeyWrite(ctx, pub)
}

// loadJWKSFile reads a JWKS file for kluis to trust. Unlike a fetched set, the
// operator wrote it, so anything odd in it is a start-up error rather than a
// key quietly skipped: a key kluis would not use, private key material, or no
// usable key at all. Symmetric keys are the exception: ignored, never used.
func loadJWKSFile(path string) (*signingKeyStore, error) {
	f, err := os.Open(path) // #nosec G304 -- KLUIS_JWT_JWKS_FILE, the operator's setting
	if err != nil {
		return nil, fmt.Errorf("open JWKS file: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read JWKS file: %w", err)
	}
	if len(raw) > maxJWKSBytes {
		return nil, fmt.Errorf("JWKS file %s is larger than %d bytes", path, maxJWKSBytes)
	}
	keys, err := parseJWKS(raw)
	if err != nil {
		return nil, fmt.Errorf("JWKS file %s: %w", path, err)
	}
	store := newSigningKeyStore(nil)
	if err := store.MemoryJWKSet.KeyReplaceAll(context.Background(), keys); err != nil {
		return nil, fmt.Errorf("JWKS file %s: %w", path, err)
	}
	return store, nil
}

// parseJWKS turns a JWKS document into the public signing keys it holds,
// failing on the first key kluis would refuse.
func parseJWKS(raw []byte) ([]jwkset.JWK, error) {
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	var keys []jwkset.JWK
	for i, m := range set.Keys {
		if m.KTY == jwkset.KtyOct {
			continue
		}
		if m.D != "" || m.P != "" || m.Q != "" {
			return nil, fmt.Errorf("key %d (kid %q) holds private key material: give kluis public keys only", i, m.KID)
		}
		j, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			return nil, fmt.Errorf("key %d (kid %q): %w", i, m.KID, err)
		}
		pub, err := publicSigningKey(j)
		if err != nil {
			return nil, fmt.Errorf("key %d (kid %q) refused: %w", i, m.KID, err)
		}
		keys = append(keys, pub)
	}
	if len(keys) == 0 {
		return nil, errors.New("no RSA or EC P-256 signing key in the set")
	}
	return keys, nil
}
