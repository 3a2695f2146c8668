package vault

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"testing"

	"github.com/kluis-dev/kluis"

	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// benchSecret is a 256-byte record, about the size of a sealed access token.
var benchSecret = make([]byte, 256)

func benchGCM(b *testing.B, key []byte) cipher.AEAD {
	b.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		b.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		b.Fatal(err)
	}
	return aead
}

// BenchmarkRawGCMSeal256 is the floor: AES-256-GCM of the same 256 bytes with
// a prepared AEAD and a random nonce, no AAD, no format.
func BenchmarkRawGCMSeal256(b *testing.B) {
	aead := benchGCM(b, testKey(b))
	nonce := make([]byte, nonceSize)
	dst := make([]byte, 0, len(benchSecret)+tagSize)
	b.SetBytes(int64(len(benchSecret)))
	for b.Loop() {
		_, _ = rand.Read(nonce)
		dst = aead.Seal(dst[:0], nonce, benchSecret, nil)
	}
}

// BenchmarkRawGCMOpen256 is the floor for opening.
func BenchmarkRawGCMOpen256(b *testing.B) {
	aead := benchGCM(b, testKey(b))
	nonce := make([]byte, nonceSize)
	ct := aead.Seal(nil, nonce, benchSecret, nil)
	dst := make([]byte, 0, len(benchSecret))
	b.SetBytes(int64(len(benchSecret)))
	for b.Loop() {
		var err error
		if dst, err = aead.Open(dst[:0], nonce, ct, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawGCMSetupAndSeal256 is the floor plus an AES key schedule and
// GCM setup per call: what the envelope pays so that no key schedule outlives
// its use (see newGCM).
func BenchmarkRawGCMSetupAndSeal256(b *testing.B) {
	key := testKey(b)
	nonce := make([]byte, nonceSize)
	dst := make([]byte, 0, len(benchSecret)+tagSize)
	b.SetBytes(int64(len(benchSecret)))
	for b.Loop() {
		aead := benchGCM(b, key)
		_, _ = rand.Read(nonce)
		dst = aead.Seal(dst[:0], nonce, benchSecret, nil)
	}
}

// BenchmarkSealEnvelope256 is SealEnvelope: key setup per call (the AEAD is
// not kept, see newGCM), the AAD, the header, a fresh nonce.
func BenchmarkSealEnvelope256(b *testing.B) {
	key := testKey(b)
	b.SetBytes(int64(len(benchSecret)))
	for b.Loop() {
		if _, err := SealEnvelope(key, testBinding, benchSecret); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenEnvelope256 is OpenEnvelope: strict parse, key setup, AAD.
func BenchmarkOpenEnvelope256(b *testing.B) {
	key := testKey(b)
	env, err := SealEnvelope(key, testBinding, benchSecret)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(benchSecret)))
	for b.Loop() {
		if _, err := OpenEnvelope(key, testBinding, env); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenThroughCache256 is a warm-cache open without the database: the
// cache lookup (lock, wrapped-key check, copy, zero) plus OpenEnvelope.
func BenchmarkOpenThroughCache256(b *testing.B) {
	p := newFakeProvider()
	ring := NewKeyRing(p, CacheOptions{MaxUses: 1 << 62})
	dk, err := p.GenerateDataKey(context.Background(), providerKeyID("sub_bench", 1))
	if err != nil {
		b.Fatal(err)
	}
	env, err := SealEnvelope(dk.Plaintext, Binding{SubjectID: "sub_bench", Ref: "cred_bench", Kind: KindBankAccessToken, KeyVersion: 1}, benchSecret)
	if err != nil {
		b.Fatal(err)
	}
	sk := storedKey{version: 1, wrapped: dk.Wrapped.Ciphertext, rootVersion: dk.Wrapped.RootVersion}
	bind := Binding{SubjectID: "sub_bench", Ref: "cred_bench", Kind: KindBankAccessToken, KeyVersion: 1}
	ctx := context.Background()
	b.SetBytes(int64(len(benchSecret)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			err := ring.withStoredKey(ctx, "sub_bench", sk, func(key []byte) error {
				_, err := OpenEnvelope(key, bind, env)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(p.unwraps.Load()), "unwraps")
}

// BenchmarkStoreOpen256 is Store.Open end to end on a warm cache: one
// Postgres round trip plus the cached open.
func BenchmarkStoreOpen256(b *testing.B) {
	ctx := context.Background()
	db, _ := pgtest.Open(b)
	p := newFakeProvider()
	sys, err := LoadSystemKeys(ctx, db, p)
	if err != nil {
		b.Fatal(err)
	}
	store := NewStore(db, NewKeyRing(p, CacheOptions{MaxUses: 1 << 62}), sys, testKinds)
	sub, err := EnsureSubject(ctx, db.Pool, "bench-user")
	if err != nil {
		b.Fatal(err)
	}
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	ref, err := store.Seal(ctx, tx, ItemOwner(kluis.NewID(kluis.PrefixItem)), sub, KindBankAccessToken, benchSecret, "")
	if err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	before := p.unwraps.Load()
	b.SetBytes(int64(len(benchSecret)))
	for b.Loop() {
		c, err := store.Open(ctx, ref)
		if err != nil {
			b.Fatal(err)
		}
		c.Zero()
	}
	b.ReportMetric(float64(p.unwraps.Load()-before), "unwraps")
}
