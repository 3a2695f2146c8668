package awskms_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/awskms"
	"github.com/kluis-dev/kluis/vault/awskms/kmstest"
	"github.com/kluis-dev/kluis/vault/vaulttest"
)

// testAttempts is the SDK's attempt bound in these tests.
const testAttempts = 3

// newProvider builds a provider with the real SDK client pointed at srv,
// with short backoff so retries do not slow the tests.
func newProvider(t testing.TB, srv *kmstest.Server, keyID string, opts ...awskms.Option) *awskms.Provider {
	t.Helper()
	base := []awskms.Option{
		awskms.WithLoadOptions(
			config.WithRegion(kmstest.Region),
			config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(kmstest.AccessKeyID, kmstest.SecretAccessKey, "")),
			config.WithBaseEndpoint(srv.URL),
			// Keep the developer's own AWS files out of the tests.
			config.WithSharedConfigFiles([]string{filepath.Join(t.TempDir(), "none")}),
			config.WithSharedCredentialsFiles([]string{filepath.Join(t.TempDir(), "none")}),
		),
		awskms.WithMaxAttempts(testAttempts),
		awskms.WithMaxBackoff(5 * time.Millisecond),
	}
	p, err := awskms.New(context.Background(), keyID, append(base, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func TestContract(t *testing.T) {
	vaulttest.TestProvider(t, func(t *testing.T) vaulttest.Harness {
		srv := kmstest.NewServer(t)
		return vaulttest.Harness{
			Provider:     newProvider(t, srv, srv.KeyARN()),
			ProviderName: "awskms",
			Rotate:       func(*testing.T) { srv.Rotate("") },
			Unavailable:  func(*testing.T) { srv.Stop() },
			Refuse:       func(*testing.T) { srv.DisableKey("") },
		}
	})
}

func TestRewrapMovesKeysToTheNewestBackingKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := kmstest.NewServer(t)
	p := newProvider(t, srv, srv.KeyARN())
	k, err := p.GenerateDataKey(ctx, "sk_1")
	if err != nil {
		t.Fatal(err)
	}
	if _, v, _ := kmstest.BlobKey(k.Wrapped.Ciphertext); v != 1 {
		t.Fatalf("generated under version %d, want 1", v)
	}
	srv.Rotate("")
	got, err := p.Rewrap(ctx, []vault.RewrapItem{{KeyID: "sk_1", Wrapped: k.Wrapped}})
	if err != nil {
		t.Fatalf("Rewrap: %v", err)
	}
	if _, v, _ := kmstest.BlobKey(got[0].Ciphertext); v != 2 {
		t.Fatalf("rewrapped under version %d, want 2", v)
	}
	if got[0].RootVersion != "" {
		t.Fatalf("RootVersion = %q, want \"\": KMS hides versions", got[0].RootVersion)
	}
	if n := srv.Calls(kmstest.OpReEncrypt); n != 1 {
		t.Fatalf("ReEncrypt calls = %d, want 1", n)
	}
}

func TestRewrapKeepsOrderAcrossManyKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := kmstest.NewServer(t)
	p := newProvider(t, srv, srv.KeyARN(), awskms.WithRewrapConcurrency(4))
	var items []vault.RewrapItem
	var plain [][]byte
	for i := range 20 {
		id := "sk_" + string(rune('a'+i))
		k, err := p.GenerateDataKey(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, vault.RewrapItem{KeyID: id, Wrapped: k.Wrapped})
		plain = append(plain, k.Plaintext)
	}
	srv.Rotate("")
	got, err := p.Rewrap(ctx, items)
	if err != nil {
		t.Fatalf("Rewrap: %v", err)
	}
	for i := range items {
		pt, err := p.Unwrap(ctx, items[i].KeyID, got[i])
		if err != nil || !bytes.Equal(pt, plain[i]) {
			t.Fatalf("item %d: Unwrap after Rewrap: err %v, same key %v", i, err, bytes.Equal(pt, plain[i]))
		}
	}
}

func TestAnAliasNamesTheKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := kmstest.NewServer(t)
	p := newProvider(t, srv, "alias/kluis")
	k, err := p.GenerateDataKey(ctx, "sk_1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Unwrap(ctx, "sk_1", k.Wrapped); err != nil {
		t.Fatalf("Unwrap through an alias: %v", err)
	}
	info, err := p.Describe(ctx)
	if err != nil || info.KeyID != srv.KeyARN() {
		t.Fatalf("Describe = %+v, %v; want the key's ARN", info, err)
	}
}

func TestAKeyFromAnotherKMSKeyIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := kmstest.NewServer(t)
	other := srv.CreateKey("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")
	k, err := newProvider(t, srv, other).GenerateDataKey(ctx, "sk_1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = newProvider(t, srv, srv.KeyARN()).Unwrap(ctx, "sk_1", k.Wrapped)
	if !errors.Is(err, vault.ErrKeyRefused) {
		t.Fatalf("Unwrap of a key wrapped under another KMS key: %v, want ErrKeyRefused", err)
	}
}

func TestThrottlingIsRetriedThenSucceeds(t *testing.T) {
	t.Parallel()
	srv := kmstest.NewServer(t)
	p := newProvider(t, srv, srv.KeyARN())
	srv.InjectError("ThrottlingException", testAttempts-1)
	if _, err := p.GenerateDataKey(context.Background(), "sk_1"); err != nil {
		t.Fatalf("GenerateDataKey after %d throttles: %v", testAttempts-1, err)
	}
	if got, want := srv.Calls(kmstest.OpGenerateDataKey), testAttempts; got != want {
		t.Fatalf("GenerateDataKey calls = %d, want %d", got, want)
	}
}

func TestPersistentThrottlingIsUnavailable(t *testing.T) {
	t.Parallel()
	srv := kmstest.NewServer(t)
	p := newProvider(t, srv, srv.KeyARN())
	srv.InjectError("ThrottlingException", -1)
	_, err := p.GenerateDataKey(context.Background(), "sk_1")
	if !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Fatalf("GenerateDataKey under persistent throttling: %v, want ErrKeyUnavailable", err)
	}
	if got, want := srv.Calls(kmstest.OpGenerateDataKey), testAttempts; got != want {
		t.Fatalf("GenerateDataKey calls = %d, want the bound %d", got, want)
	}
}

func TestErrorsMapToTheVaultSentinels(t *testing.T) {
	t.Parallel()
	tests := []struct {
		errType string
		want    error
		retried bool
	}{
		{"AccessDeniedException", vault.ErrKeyRefused, false},
		{"DisabledException", vault.ErrKeyRefused, false},
		{"KMSInvalidStateException", vault.ErrKeyRefused, false},
		{"InvalidCiphertextException", vault.ErrKeyRefused, false},
		{"NotFoundException", vault.ErrKeyRefused, false},
		{"IncorrectKeyException", vault.ErrKeyRefused, false},
		{"KMSInternalException", vault.ErrKeyUnavailable, true},
		{"DependencyTimeoutException", vault.ErrKeyUnavailable, true},
		{"KeyUnavailableException", vault.ErrKeyUnavailable, true},
	}
	for _, tt := range tests {
		t.Run(tt.errType+" is "+sentinelName(tt.want), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			srv := kmstest.NewServer(t)
			p := newProvider(t, srv, srv.KeyARN())
			k, err := p.GenerateDataKey(ctx, "sk_1")
			if err != nil {
				t.Fatal(err)
			}
			srv.InjectError(tt.errType, -1)
			_, err = p.Unwrap(ctx, "sk_1", k.Wrapped)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Unwrap: %v, want %v", err, tt.want)
			}
			vaulttest.AssertNoSecret(t, err, k.Plaintext, k.Wrapped.Ciphertext)
			wantCalls := 1
			if tt.retried {
				wantCalls = testAttempts
			}
			if got := srv.Calls(kmstest.OpDecrypt); got != wantCalls {
				t.Fatalf("Decrypt calls = %d, want %d", got, wantCalls)
			}
		})
	}
}

func sentinelName(err error) string {
	if errors.Is(err, vault.ErrKeyUnavailable) {
		return "unavailable"
	}
	return "refused"
}

func TestAHangingServerTimesOutWithinTheDeadline(t *testing.T) {
	t.Parallel()
	srv := kmstest.NewServer(t)
	p := newProvider(t, srv, srv.KeyARN())
	srv.Hang()
	const deadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	_, err := p.GenerateDataKey(ctx, "sk_1")
	elapsed := time.Since(start)
	if !errors.Is(err, vault.ErrKeyUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GenerateDataKey against a hanging KMS: %v, want ErrKeyUnavailable and DeadlineExceeded", err)
	}
	// Generous: the point is that the call does not hang, not its speed.
	if elapsed > deadline+5*time.Second {
		t.Fatalf("GenerateDataKey returned after %v, deadline %v", elapsed, deadline)
	}
}

func TestTheCallTimeoutBoundsACallWithoutDeadline(t *testing.T) {
	t.Parallel()
	srv := kmstest.NewServer(t)
	p := newProvider(t, srv, srv.KeyARN(), awskms.WithCallTimeout(200*time.Millisecond))
	srv.Hang()
	_, err := p.Describe(context.Background())
	if !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Fatalf("Describe against a hanging KMS: %v, want ErrKeyUnavailable", err)
	}
}

func TestDescribeRefusesAKeyKluisCannotUse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(srv *kmstest.Server) string
	}{
		{"a disabled key", func(srv *kmstest.Server) string {
			srv.DisableKey("")
			return srv.KeyARN()
		}},
		{"a key pending deletion", func(srv *kmstest.Server) string {
			srv.SetKeyState("", kmstest.StatePendingDeletion)
			return srv.KeyARN()
		}},
		{"a signing key", func(srv *kmstest.Server) string {
			return srv.CreateKey("RSA_2048", "SIGN_VERIFY")
		}},
		{"an HMAC key", func(srv *kmstest.Server) string {
			return srv.CreateKey("HMAC_256", "GENERATE_VERIFY_MAC")
		}},
		{"a key that does not exist", func(srv *kmstest.Server) string {
			return "alias/absent"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := kmstest.NewServer(t)
			keyID := tt.setup(srv)
			_, err := newProvider(t, srv, keyID).Describe(context.Background())
			if !errors.Is(err, vault.ErrKeyRefused) {
				t.Fatalf("Describe: %v, want ErrKeyRefused", err)
			}
		})
	}
}

func TestNewReadsTheSDKEnvironment(t *testing.T) {
	// t.Setenv: not parallel.
	srv := kmstest.NewServer(t)
	dir := t.TempDir()
	t.Setenv("AWS_ENDPOINT_URL_KMS", srv.URL)
	t.Setenv("AWS_REGION", kmstest.Region)
	t.Setenv("AWS_ACCESS_KEY_ID", kmstest.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", kmstest.SecretAccessKey)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_PROFILE", "")
	p, err := awskms.New(context.Background(), srv.KeyARN())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	info, err := p.Describe(context.Background())
	if err != nil {
		t.Fatalf("Describe through AWS_ENDPOINT_URL_KMS: %v", err)
	}
	if info.KeyID != srv.KeyARN() || info.Provider != "awskms" {
		t.Fatalf("Describe = %+v", info)
	}
	if n := srv.Calls(kmstest.OpDescribeKey); n != 1 {
		t.Fatalf("the fake KMS saw %d DescribeKey calls, want 1", n)
	}
}

func TestNewRefusesMissingConfiguration(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_PROFILE", "")
	if _, err := awskms.New(context.Background(), ""); err == nil {
		t.Error("New with no key id succeeded")
	}
	if _, err := awskms.New(context.Background(), "alias/kluis"); err == nil {
		t.Error("New with no region succeeded")
	}
}

// recordingClient is the SDK seam replaced by functions that record what the
// provider sends.
type recordingClient struct {
	generate  *kms.GenerateDataKeyInput
	decrypt   *kms.DecryptInput
	reEncrypt *kms.ReEncryptInput
}

func (c *recordingClient) GenerateDataKey(_ context.Context, in *kms.GenerateDataKeyInput, _ ...func(*kms.Options)) (*kms.GenerateDataKeyOutput, error) {
	c.generate = in
	return &kms.GenerateDataKeyOutput{Plaintext: make([]byte, 32), CiphertextBlob: []byte("blob")}, nil
}

func (c *recordingClient) Decrypt(_ context.Context, in *kms.DecryptInput, _ ...func(*kms.Options)) (*kms.DecryptOutput, error) {
	c.decrypt = in
	return &kms.DecryptOutput{Plaintext: make([]byte, 32)}, nil
}

func (c *recordingClient) ReEncrypt(_ context.Context, in *kms.ReEncryptInput, _ ...func(*kms.Options)) (*kms.ReEncryptOutput, error) {
	c.reEncrypt = in
	return &kms.ReEncryptOutput{CiphertextBlob: []byte("blob2")}, nil
}

func (c *recordingClient) DescribeKey(context.Context, *kms.DescribeKeyInput, ...func(*kms.Options)) (*kms.DescribeKeyOutput, error) {
	return &kms.DescribeKeyOutput{KeyMetadata: &types.KeyMetadata{
		Arn: aws.String("arn:aws:kms:us-east-1:1:key/k"), KeyState: types.KeyStateEnabled,
		KeySpec: types.KeySpecSymmetricDefault, KeyUsage: types.KeyUsageTypeEncryptDecrypt,
	}}, nil
}

func TestEveryCallCarriesTheEncryptionContext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := &recordingClient{}
	p := awskms.NewWithClient(c, "alias/root")
	want := map[string]string{"kluis:key": "sk_1"}
	if _, err := p.GenerateDataKey(ctx, "sk_1"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Unwrap(ctx, "sk_1", vault.WrappedKey{Ciphertext: []byte("blob")}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Rewrap(ctx, []vault.RewrapItem{{KeyID: "sk_1", Wrapped: vault.WrappedKey{Ciphertext: []byte("blob")}}}); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		got  map[string]string
	}{
		{"GenerateDataKey", c.generate.EncryptionContext},
		{"Decrypt", c.decrypt.EncryptionContext},
		{"ReEncrypt source", c.reEncrypt.SourceEncryptionContext},
		{"ReEncrypt destination", c.reEncrypt.DestinationEncryptionContext},
	}
	for _, ch := range checks {
		if len(ch.got) != 1 || ch.got["kluis:key"] != want["kluis:key"] {
			t.Errorf("%s encryption context = %v, want %v", ch.name, ch.got, want)
		}
	}
	if c.generate.KeySpec != types.DataKeySpecAes256 || aws.ToString(c.generate.KeyId) != "alias/root" {
		t.Errorf("GenerateDataKey input: KeySpec %q, KeyId %q", c.generate.KeySpec, aws.ToString(c.generate.KeyId))
	}
	if aws.ToString(c.decrypt.KeyId) != "alias/root" {
		t.Errorf("Decrypt KeyId = %q, want the root key", aws.ToString(c.decrypt.KeyId))
	}
	if aws.ToString(c.reEncrypt.SourceKeyId) != "alias/root" || aws.ToString(c.reEncrypt.DestinationKeyId) != "alias/root" {
		t.Errorf("ReEncrypt key ids = %q → %q", aws.ToString(c.reEncrypt.SourceKeyId), aws.ToString(c.reEncrypt.DestinationKeyId))
	}
}

func TestAShortPlaintextFromKMSIsRefused(t *testing.T) {
	t.Parallel()
	p := awskms.NewWithClient(shortClient{&recordingClient{}}, "alias/root")
	_, err := p.Unwrap(context.Background(), "sk_1", vault.WrappedKey{Ciphertext: []byte("blob")})
	if !errors.Is(err, vault.ErrKeyRefused) {
		t.Fatalf("Unwrap of a 5-byte plaintext: %v, want ErrKeyRefused", err)
	}
}

// shortClient answers Decrypt with a plaintext that is not a data key.
type shortClient struct{ *recordingClient }

func (shortClient) Decrypt(context.Context, *kms.DecryptInput, ...func(*kms.Options)) (*kms.DecryptOutput, error) {
	return &kms.DecryptOutput{Plaintext: []byte("short")}, nil
}

// BenchmarkUnwrap measures an unwrap against a KMS 25 ms away, the cost a
// data-key cache miss pays.
func BenchmarkUnwrap(b *testing.B) {
	srv := kmstest.NewServer(b)
	p := newProvider(b, srv, srv.KeyARN())
	ctx := context.Background()
	k, err := p.GenerateDataKey(ctx, "sk_1")
	if err != nil {
		b.Fatal(err)
	}
	srv.SetLatency(25 * time.Millisecond)
	b.ResetTimer()
	for b.Loop() {
		if _, err := p.Unwrap(ctx, "sk_1", k.Wrapped); err != nil {
			b.Fatal(err)
		}
	}
}
