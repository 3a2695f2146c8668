package vault

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func testKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

var testBinding = Binding{SubjectID: "sub_aaaa", Ref: "cred_bbbb", Kind: KindBankAccessToken, KeyVersion: 1, Owner: ItemOwner("itm_eeee")}

func TestEnvelopeOpensWhereItWasSealed(t *testing.T) {
	t.Parallel()
	secret := []byte(`{"access_token":"access-sandbox-123"}`)
	env, err := SealEnvelope(testKey(t), testBinding, secret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenEnvelope(testKey(t), testBinding, env)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatalf("got %q, want %q", got, secret)
	}
	if bytes.Contains(env, secret) {
		t.Fatal("envelope holds the secret in the clear")
	}
}

func TestTheSameSecretSealedTwiceGivesDifferentBytes(t *testing.T) {
	t.Parallel()
	secret := []byte("same secret")
	a, err := SealEnvelope(testKey(t), testBinding, secret)
	if err != nil {
		t.Fatal(err)
	}
	b, err := SealEnvelope(testKey(t), testBinding, secret)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Fatal("two seals of one secret gave the same bytes")
	}
	if bytes.Equal(a[5:17], b[5:17]) {
		t.Fatal("two seals reused a nonce")
	}
}

func TestOneFlippedBitAnywhereFailsToOpen(t *testing.T) {
	t.Parallel()
	env, err := SealEnvelope(testKey(t), testBinding, []byte(`{"account_number":"1234567890"}`))
	if err != nil {
		t.Fatal(err)
	}
	for i := range env {
		for _, bit := range []byte{0x01, 0x80} {
			bad := bytes.Clone(env)
			bad[i] ^= bit
			if _, err := OpenEnvelope(testKey(t), testBinding, bad); err == nil {
				t.Fatalf("flipping bit %#x of byte %d still opened", bit, i)
			}
		}
	}
}

func TestAMovedEnvelopeFailsToOpen(t *testing.T) {
	t.Parallel()
	env, err := SealEnvelope(testKey(t), testBinding, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	otherKey := testKey(t)
	otherKey[0] ^= 1
	tests := []struct {
		name string
		key  []byte
		b    Binding
	}{
		{"another subject", testKey(t), Binding{SubjectID: "sub_cccc", Ref: "cred_bbbb", Kind: KindBankAccessToken, KeyVersion: 1, Owner: testBinding.Owner}},
		{"another row", testKey(t), Binding{SubjectID: "sub_aaaa", Ref: "cred_dddd", Kind: KindBankAccessToken, KeyVersion: 1, Owner: testBinding.Owner}},
		{"another kind", testKey(t), Binding{SubjectID: "sub_aaaa", Ref: "cred_bbbb", Kind: KindAccountNumber, KeyVersion: 1, Owner: testBinding.Owner}},
		{"another key version", testKey(t), Binding{SubjectID: "sub_aaaa", Ref: "cred_bbbb", Kind: KindBankAccessToken, KeyVersion: 2, Owner: testBinding.Owner}},
		{"another key", otherKey, testBinding},
		{"bytes shifted from subject to ref", testKey(t), Binding{SubjectID: "sub_aaa", Ref: "acred_bbbb", Kind: KindBankAccessToken, KeyVersion: 1, Owner: testBinding.Owner}},
		{"another owner of the same type", testKey(t), Binding{SubjectID: "sub_aaaa", Ref: "cred_bbbb", Kind: KindBankAccessToken, KeyVersion: 1, Owner: ItemOwner("itm_ffff")}},
		{"an owner of another type with the same id", testKey(t), Binding{SubjectID: "sub_aaaa", Ref: "cred_bbbb", Kind: KindBankAccessToken, KeyVersion: 1, Owner: Owner{Type: OwnerAccount, ID: "itm_eeee"}}},
		{"no owner", testKey(t), Binding{SubjectID: "sub_aaaa", Ref: "cred_bbbb", Kind: KindBankAccessToken, KeyVersion: 1}},
		{"bytes shifted from owner type to owner id", testKey(t), Binding{SubjectID: "sub_aaaa", Ref: "cred_bbbb", Kind: KindBankAccessToken, KeyVersion: 1, Owner: Owner{Type: "ite", ID: "mitm_eeee"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := OpenEnvelope(tt.key, tt.b, env)
			if !errors.Is(err, ErrEnvelopeAuth) {
				t.Fatalf("got %v, want ErrEnvelopeAuth", err)
			}
		})
	}
}

func TestLengthPrefixesKeepFieldsFromShifting(t *testing.T) {
	t.Parallel()
	a, err := Binding{SubjectID: "ab", Ref: "c", Kind: "k", KeyVersion: 1}.aad(EnvelopeV1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Binding{SubjectID: "a", Ref: "bc", Kind: "k", KeyVersion: 1}.aad(EnvelopeV1)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Fatal("shifting a byte between fields gave the same AAD")
	}
}

func TestParseRefusesMalformedEnvelopes(t *testing.T) {
	t.Parallel()
	valid, err := SealEnvelope(testKey(t), testBinding, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	zeroVersion := bytes.Clone(valid)
	copy(zeroVersion[1:5], []byte{0, 0, 0, 0})
	unknown := bytes.Clone(valid)
	unknown[0] = 3
	tests := []struct {
		name string
		data []byte
	}{
		{"nothing", nil},
		{"an unknown format version", unknown},
		{"format version zero", append([]byte{0}, valid[1:]...)},
		{"a header alone", valid[:headerSize]},
		{"a tag with no ciphertext", valid[:headerSize+tagSize]},
		{"key version zero", zeroVersion},
		{"more than the largest secret", append(bytes.Clone(valid[:headerSize]), make([]byte, MaxSecretSize+tagSize+1)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseEnvelope(tt.data); !errors.Is(err, ErrMalformedEnvelope) {
				t.Fatalf("got %v, want ErrMalformedEnvelope", err)
			}
		})
	}
	if _, err := ParseEnvelope(valid); err != nil {
		t.Fatalf("the smallest valid envelope was refused: %v", err)
	}
}

func TestSealRefusesBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		key    []byte
		b      Binding
		secret []byte
	}{
		{"an empty secret", testKey(t), testBinding, nil},
		{"a secret over the limit", testKey(t), testBinding, make([]byte, MaxSecretSize+1)},
		{"a short key", make([]byte, 16), testBinding, []byte("x")},
		{"key version zero", testKey(t), Binding{SubjectID: "s", Ref: "r", Kind: "k", Owner: testBinding.Owner}, []byte("x")},
		{"an empty ref", testKey(t), Binding{SubjectID: "s", Kind: "k", KeyVersion: 1, Owner: testBinding.Owner}, []byte("x")},
		{"no owner", testKey(t), Binding{SubjectID: "s", Ref: "r", Kind: "k", KeyVersion: 1}, []byte("x")},
		{"an owner id over 255 bytes", testKey(t), Binding{SubjectID: "s", Ref: "r", Kind: "k", KeyVersion: 1, Owner: ItemOwner(strings.Repeat("i", 256))}, []byte("x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := SealEnvelope(tt.key, tt.b, tt.secret); err == nil {
				t.Fatal("sealed")
			}
		})
	}
}

// The known-answer vectors of docs/ENVELOPE.md (checked against an
// independent implementation, Python's cryptography AESGCM): key 00 01 … 1f,
// nonce 00 … 0b, the binding below, secret {"access_token":"tok"}; version
// 1 ignores the owner, version 2 binds it.
const (
	kavSecret     = `{"access_token":"tok"}`
	kavAAD        = "010000000100166b6c7569732f7661756c742f63726564656e7469616c000b7375625f6578616d706c65000c637265645f6578616d706c65001162616e6b5f6163636573735f746f6b656e"
	kavEnvelope   = "0100000001000102030405060708090a0b3c20b778a680b168d235f8e0d4875a57a1a2e85fd206063e3d5a5a2fa3956daea49ed82fecf3"
	kavAADV2      = "020000000100166b6c7569732f7661756c742f63726564656e7469616c000b7375625f6578616d706c65000c637265645f6578616d706c65001162616e6b5f6163636573735f746f6b656e00046974656d000b69746d5f6578616d706c65"
	kavEnvelopeV2 = "0200000001000102030405060708090a0b3c20b778a680b168d235f8e0d4875a57a1a2e85fd206e388f44d60e48e520eac8ffb8c29043f"
)

var kavBinding = Binding{SubjectID: "sub_example", Ref: "cred_example", Kind: KindBankAccessToken, KeyVersion: 1, Owner: ItemOwner("itm_example")}

func TestKnownAnswerVectorsMatchTheSpecification(t *testing.T) {
	t.Parallel()
	var nonce [nonceSize]byte
	for i := range nonce {
		nonce[i] = byte(i)
	}
	for _, tt := range []struct {
		version       byte
		aad, envelope string
	}{{EnvelopeV1, kavAAD, kavEnvelope}, {EnvelopeV2, kavAADV2, kavEnvelopeV2}} {
		env, err := sealVersion(testKey(t), tt.version, kavBinding, nonce, []byte(kavSecret))
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(env); got != tt.envelope {
			t.Fatalf("version %d: got %s, want %s", tt.version, got, tt.envelope)
		}
		aad, err := kavBinding.aad(tt.version)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(aad); got != tt.aad {
			t.Fatalf("version %d: aad %s, want %s", tt.version, got, tt.aad)
		}
		got, err := OpenEnvelope(testKey(t), kavBinding, env)
		if err != nil || string(got) != kavSecret {
			t.Fatalf("version %d: the vector does not open: %v", tt.version, err)
		}
	}
}

func TestSealWritesVersion2AndAVersion1RecordStillOpens(t *testing.T) {
	t.Parallel()
	v2, err := SealEnvelope(testKey(t), testBinding, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if EnvelopeVersion(v2) != EnvelopeV2 {
		t.Fatalf("SealEnvelope wrote version %d, want 2", EnvelopeVersion(v2))
	}
	v1, err := sealEnvelopeV1(testKey(t), testBinding, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	// A version-1 record binds no owner: it opens whatever owner the row
	// names, which is why its owner is checked against the pointers.
	for _, owner := range []Owner{testBinding.Owner, ItemOwner("itm_ffff"), {}} {
		b := testBinding
		b.Owner = owner
		if got, err := OpenEnvelope(testKey(t), b, v1); err != nil || string(got) != "x" {
			t.Fatalf("the version-1 record does not open for owner %v: %v", owner, err)
		}
	}
}

func TestAVersionByteRewrittenFailsToOpen(t *testing.T) {
	t.Parallel()
	// A downgrade (2 to 1, dropping the owner from the AAD) and an upgrade
	// both fail the tag: the version is in the AAD.
	v2, err := SealEnvelope(testKey(t), testBinding, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	down := bytes.Clone(v2)
	down[0] = EnvelopeV1
	if _, err := OpenEnvelope(testKey(t), testBinding, down); !errors.Is(err, ErrEnvelopeAuth) {
		t.Fatalf("a version-2 record relabelled version 1: %v, want ErrEnvelopeAuth", err)
	}
	v1, err := sealEnvelopeV1(testKey(t), testBinding, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	up := bytes.Clone(v1)
	up[0] = EnvelopeV2
	if _, err := OpenEnvelope(testKey(t), testBinding, up); !errors.Is(err, ErrEnvelopeAuth) {
		t.Fatalf("a version-1 record relabelled version 2: %v, want ErrEnvelopeAuth", err)
	}
}

// FuzzParseEnvelope: the parser never panics, and whatever it accepts
// marshals back to exactly the bytes it was given.
func FuzzParseEnvelope(f *testing.F) {
	addEnvelopeSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := ParseEnvelope(data)
		if err != nil {
			if !errors.Is(err, ErrMalformedEnvelope) {
				t.Fatalf("parse error %v is not ErrMalformedEnvelope", err)
			}
			return
		}
		if !bytes.Equal(env.Marshal(), data) {
			t.Fatal("parse then marshal changed the bytes")
		}
	})
}

// FuzzOpenEnvelope: opening never panics, fails only with the two envelope
// errors, and whatever opens is the known-answer secret (nothing else was
// ever sealed under this key and binding).
func FuzzOpenEnvelope(f *testing.F) {
	addEnvelopeSeeds(f)
	key := testKey(f)
	kavV2, err := hex.DecodeString(kavEnvelopeV2)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := OpenEnvelope(key, kavBinding, data)
		if err == nil && EnvelopeVersion(data) == EnvelopeV2 && !bytes.Equal(data, kavV2) {
			// Only the vector itself was ever sealed as version 2 here.
			t.Fatalf("a version-2 envelope other than the vector opened")
		}
		if err != nil {
			if !errors.Is(err, ErrMalformedEnvelope) && !errors.Is(err, ErrEnvelopeAuth) {
				t.Fatalf("open error %v is neither malformed nor auth", err)
			}
			return
		}
		if string(got) != kavSecret {
			t.Fatalf("opened to something never sealed")
		}
	})
}

func addEnvelopeSeeds(f *testing.F) {
	f.Helper()
	kav, err := hex.DecodeString(kavEnvelope)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(kav)
	f.Add(kav[:headerSize])
	f.Add(kav[:minEnvelopeLen-1])
	f.Add([]byte{})
	f.Add([]byte{EnvelopeV1})
	kavV2, err := hex.DecodeString(kavEnvelopeV2)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(kavV2)
	f.Add(kavV2[:headerSize])
	f.Add([]byte{EnvelopeV2})
	downgraded := bytes.Clone(kavV2)
	downgraded[0] = EnvelopeV1
	f.Add(downgraded)
	f.Add([]byte{3})
}
