// Package awskms is the AWS KMS root-key provider: data keys come from KMS
// GenerateDataKey, open with Decrypt and move to the current key material
// with ReEncrypt. The root key never leaves KMS.
//
// Every call carries the encryption context {"kluis:key": keyID}, so a
// wrapped key copied to another identity fails to decrypt (KMS answers
// InvalidCiphertextException), and CloudTrail records which data key each
// call was for.
//
// Versions: KMS hides which backing key material encrypted a ciphertext
// (automatic and on-demand rotation keep every old version and use the
// newest), so RootVersion and LatestVersion are always "". Key rotation for
// KMS therefore rewraps every subject key through ReEncrypt: kluis cannot
// tell which keys are still under older material.
package awskms

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"golang.org/x/sync/errgroup"

	"github.com/kluis-dev/kluis/vault"
)

// Client is the part of the KMS SDK client the provider uses: a narrow seam
// that *kms.Client satisfies and tests may replace.
type Client interface {
	GenerateDataKey(ctx context.Context, in *kms.GenerateDataKeyInput, optFns ...func(*kms.Options)) (*kms.GenerateDataKeyOutput, error)
	Decrypt(ctx context.Context, in *kms.DecryptInput, optFns ...func(*kms.Options)) (*kms.DecryptOutput, error)
	ReEncrypt(ctx context.Context, in *kms.ReEncryptInput, optFns ...func(*kms.Options)) (*kms.ReEncryptOutput, error)
	DescribeKey(ctx context.Context, in *kms.DescribeKeyInput, optFns ...func(*kms.Options)) (*kms.DescribeKeyOutput, error)
}

// ContextKey is the encryption-context name that binds a wrapped data key to
// its identity. Changing it makes every stored key undecryptable.
const ContextKey = "kluis:key"

// providerName is what Describe reports as RootKeyInfo.Provider.
const providerName = "awskms"

// dataKeySize is the length of a data key: AES-256.
const dataKeySize = 32

// Defaults. A call, retries included, gives up after DefaultCallTimeout
// unless the caller's context ends first.
const (
	DefaultMaxAttempts       = 5
	DefaultMaxBackoff        = 2 * time.Second
	DefaultCallTimeout       = 10 * time.Second
	DefaultRewrapConcurrency = 8
)

// Provider wraps data keys under one KMS key. It is safe for concurrent use.
type Provider struct {
	client            Client
	keyID             string
	callTimeout       time.Duration
	rewrapConcurrency int
}

type options struct {
	maxAttempts       int
	maxBackoff        time.Duration
	callTimeout       time.Duration
	rewrapConcurrency int
	loadOptions       []func(*config.LoadOptions) error
}

// Option configures a Provider.
type Option func(*options)

// WithMaxAttempts bounds the SDK's attempts per call, the first included
// (default 5). Throttling, 5xx answers and connection errors are retried
// with exponential backoff and jitter; used by New only.
func WithMaxAttempts(n int) Option { return func(o *options) { o.maxAttempts = n } }

// WithMaxBackoff caps the wait between attempts (default 2s); used by New
// only.
func WithMaxBackoff(d time.Duration) Option { return func(o *options) { o.maxBackoff = d } }

// WithCallTimeout bounds each provider call, retries included (default
// 10s). A shorter deadline on the caller's context wins.
func WithCallTimeout(d time.Duration) Option { return func(o *options) { o.callTimeout = d } }

// WithRewrapConcurrency bounds how many ReEncrypt calls one Rewrap has in
// flight (default 8). KMS has no batch ReEncrypt, and its request quota is
// shared by the whole account: keep this modest.
func WithRewrapConcurrency(n int) Option { return func(o *options) { o.rewrapConcurrency = n } }

// WithLoadOptions adds options to config.LoadDefaultConfig, for example a
// region, static credentials or a base endpoint in tests; used by New only.
func WithLoadOptions(fns ...func(*config.LoadOptions) error) Option {
	return func(o *options) { o.loadOptions = append(o.loadOptions, fns...) }
}

func buildOptions(opts []Option) options {
	o := options{
		maxAttempts:       DefaultMaxAttempts,
		maxBackoff:        DefaultMaxBackoff,
		callTimeout:       DefaultCallTimeout,
		rewrapConcurrency: DefaultRewrapConcurrency,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.maxAttempts < 1 {
		o.maxAttempts = 1
	}
	if o.rewrapConcurrency < 1 {
		o.rewrapConcurrency = 1
	}
	return o
}

// New returns a provider for the KMS key keyID (key id, key ARN, alias name
// or alias ARN), with the SDK's usual configuration: AWS_REGION, the default
// credential chain, and AWS_ENDPOINT_URL_KMS (or AWS_ENDPOINT_URL), which the
// KMS client reads itself. It does not call KMS: use Describe to check the
// key at startup.
func New(ctx context.Context, keyID string, opts ...Option) (*Provider, error) {
	if keyID == "" {
		return nil, errors.New("awskms: no key id: set KLUIS_AWSKMS_KEY_ID to a KMS key id, ARN or alias")
	}
	o := buildOptions(opts)
	retryer := func() aws.Retryer {
		return retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = o.maxAttempts
			so.MaxBackoff = o.maxBackoff
		})
	}
	loadOptions := append([]func(*config.LoadOptions) error{config.WithRetryer(retryer)}, o.loadOptions...)
	cfg, err := config.LoadDefaultConfig(ctx, loadOptions...)
	if err != nil {
		return nil, fmt.Errorf("awskms: load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("awskms: no AWS region: set AWS_REGION")
	}
	return newProvider(kms.NewFromConfig(cfg), keyID, o), nil
}

// NewWithClient returns a provider that calls KMS through client, for tests
// and for callers that build their own SDK client (whose retryer then
// applies). Only WithCallTimeout and WithRewrapConcurrency apply.
func NewWithClient(client Client, keyID string, opts ...Option) *Provider {
	return newProvider(client, keyID, buildOptions(opts))
}

func newProvider(client Client, keyID string, o options) *Provider {
	return &Provider{client: client, keyID: keyID, callTimeout: o.callTimeout, rewrapConcurrency: o.rewrapConcurrency}
}

// encryptionContext binds a call to the data key's identity.
func encryptionContext(keyID string) map[string]string {
	return map[string]string{ContextKey: keyID}
}

// GenerateDataKey asks KMS for a fresh AES-256 data key, bound to keyID.
func (p *Provider) GenerateDataKey(ctx context.Context, keyID string) (vault.DataKey, error) {
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	out, err := p.client.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{
		KeyId:             aws.String(p.keyID),
		KeySpec:           types.DataKeySpecAes256,
		EncryptionContext: encryptionContext(keyID),
	})
	if err != nil {
		return vault.DataKey{}, classify("GenerateDataKey", err)
	}
	if len(out.Plaintext) != dataKeySize || len(out.CiphertextBlob) == 0 {
		clear(out.Plaintext)
		return vault.DataKey{}, fmt.Errorf("awskms: GenerateDataKey: unexpected answer: %w", vault.ErrKeyRefused)
	}
	return vault.DataKey{Plaintext: out.Plaintext, Wrapped: vault.WrappedKey{Ciphertext: out.CiphertextBlob}}, nil
}

// Unwrap asks KMS to decrypt a wrapped data key bound to keyID. The key id is
// passed too, so KMS refuses a ciphertext made under any other KMS key.
func (p *Provider) Unwrap(ctx context.Context, keyID string, wrapped vault.WrappedKey) ([]byte, error) {
	if len(wrapped.Ciphertext) == 0 {
		return nil, fmt.Errorf("awskms: Decrypt: empty wrapped key: %w", vault.ErrKeyRefused)
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	out, err := p.client.Decrypt(ctx, &kms.DecryptInput{
		KeyId:             aws.String(p.keyID),
		CiphertextBlob:    wrapped.Ciphertext,
		EncryptionContext: encryptionContext(keyID),
	})
	if err != nil {
		return nil, classify("Decrypt", err)
	}
	if len(out.Plaintext) != dataKeySize {
		clear(out.Plaintext)
		return nil, fmt.Errorf("awskms: Decrypt: wrapped value is not a data key: %w", vault.ErrKeyRefused)
	}
	return out.Plaintext, nil
}

// Rewrap moves each key to the KMS key's current material with ReEncrypt,
// which KMS does without showing the plaintext to kluis. KMS has no batch
// call: keys are rewrapped one call each, a few at a time. The first failure
// stops the rest and is returned, naming the item's index.
func (p *Provider) Rewrap(ctx context.Context, keys []vault.RewrapItem) ([]vault.WrappedKey, error) {
	out := make([]vault.WrappedKey, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.rewrapConcurrency)
	for i, item := range keys {
		g.Go(func() error {
			wrapped, err := p.reEncrypt(gctx, item)
			if err != nil {
				return fmt.Errorf("rewrap item %d: %w", i, err)
			}
			out[i] = wrapped
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

func (p *Provider) reEncrypt(ctx context.Context, item vault.RewrapItem) (vault.WrappedKey, error) {
	if len(item.Wrapped.Ciphertext) == 0 {
		return vault.WrappedKey{}, fmt.Errorf("awskms: ReEncrypt: empty wrapped key: %w", vault.ErrKeyRefused)
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	encCtx := encryptionContext(item.KeyID)
	out, err := p.client.ReEncrypt(ctx, &kms.ReEncryptInput{
		CiphertextBlob:               item.Wrapped.Ciphertext,
		SourceKeyId:                  aws.String(p.keyID),
		SourceEncryptionContext:      encCtx,
		DestinationKeyId:             aws.String(p.keyID),
		DestinationEncryptionContext: encCtx,
	})
	if err != nil {
		return vault.WrappedKey{}, classify("ReEncrypt", err)
	}
	if len(out.CiphertextBlob) == 0 {
		return vault.WrappedKey{}, fmt.Errorf("awskms: ReEncrypt: empty answer: %w", vault.ErrKeyRefused)
	}
	return vault.WrappedKey{Ciphertext: out.CiphertextBlob}, nil
}

// Describe reads the key's metadata and refuses a key kluis cannot use: one
// that is not Enabled, or not a symmetric encryption key.
func (p *Provider) Describe(ctx context.Context) (vault.RootKeyInfo, error) {
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	out, err := p.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(p.keyID)})
	if err != nil {
		return vault.RootKeyInfo{}, classify("DescribeKey", err)
	}
	md := out.KeyMetadata
	if md == nil || md.Arn == nil {
		return vault.RootKeyInfo{}, fmt.Errorf("awskms: DescribeKey: no key metadata: %w", vault.ErrKeyRefused)
	}
	if md.KeyState != types.KeyStateEnabled {
		return vault.RootKeyInfo{}, fmt.Errorf("awskms: key %s is %s, not Enabled: %w", *md.Arn, md.KeyState, vault.ErrKeyRefused)
	}
	if md.KeySpec != types.KeySpecSymmetricDefault || md.KeyUsage != types.KeyUsageTypeEncryptDecrypt {
		return vault.RootKeyInfo{}, fmt.Errorf("awskms: key %s is %s/%s, not SYMMETRIC_DEFAULT/ENCRYPT_DECRYPT: %w", *md.Arn, md.KeySpec, md.KeyUsage, vault.ErrKeyRefused)
	}
	return vault.RootKeyInfo{Provider: providerName, KeyID: *md.Arn, LatestVersion: ""}, nil
}

// withTimeout bounds a call; the caller's own deadline wins if sooner.
func (p *Provider) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if p.callTimeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, p.callTimeout)
}

// Error codes by what they mean for kluis. Anything else is judged by its
// fault: a server fault is unavailable, a client fault a refusal.
var (
	unavailableCodes = map[string]bool{
		"ThrottlingException":        true,
		"KMSInternalException":       true,
		"DependencyTimeoutException": true,
		"KeyUnavailableException":    true,
		"RequestTimeout":             true,
		"RequestTimeoutException":    true,
	}
	refusedCodes = map[string]bool{
		"AccessDeniedException":       true,
		"DisabledException":           true,
		"KMSInvalidStateException":    true,
		"InvalidCiphertextException":  true,
		"NotFoundException":           true,
		"IncorrectKeyException":       true,
		"InvalidKeyUsageException":    true,
		"InvalidGrantTokenException":  true,
		"ValidationException":         true,
		"UnrecognizedClientException": true,
		"InvalidSignatureException":   true,
		"ExpiredTokenException":       true,
	}
)

// classify maps an SDK error, after the SDK's own retries, to
// vault.ErrKeyUnavailable or vault.ErrKeyRefused.
func classify(op string, err error) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code := apiErr.ErrorCode()
		switch {
		case unavailableCodes[code]:
			return &vault.ProviderError{Provider: "awskms", Op: op, What: code, Sentinel: vault.ErrKeyUnavailable}
		case refusedCodes[code]:
			return &vault.ProviderError{Provider: "awskms", Op: op, What: code, Sentinel: vault.ErrKeyRefused}
		case apiErr.ErrorFault() == smithy.FaultServer || httpStatus(err) >= 500:
			return &vault.ProviderError{Provider: "awskms", Op: op, What: code, Sentinel: vault.ErrKeyUnavailable}
		default:
			return &vault.ProviderError{Provider: "awskms", Op: op, What: code, Sentinel: vault.ErrKeyRefused}
		}
	}
	var invalid smithy.InvalidParamsError
	if errors.As(err, &invalid) {
		// The request never left: a bug in kluis, not a KMS outage.
		return &vault.ProviderError{Provider: "awskms", Op: op, What: "invalid request", Sentinel: vault.ErrKeyRefused}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &vault.ProviderError{Provider: "awskms", Op: op, What: "timed out", Sentinel: vault.ErrKeyUnavailable, CtxErr: context.DeadlineExceeded}
	case errors.Is(err, context.Canceled):
		return &vault.ProviderError{Provider: "awskms", Op: op, What: "canceled", Sentinel: vault.ErrKeyUnavailable, CtxErr: context.Canceled}
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return &vault.ProviderError{Provider: "awskms", Op: op, What: "timed out", Sentinel: vault.ErrKeyUnavailable}
	}
	if errors.As(err, &netErr) {
		return &vault.ProviderError{Provider: "awskms", Op: op, What: "connection failed", Sentinel: vault.ErrKeyUnavailable}
	}
	// Anything else (an unreadable answer, an exhausted retry quota, a
	// transport failure) means KMS did not answer usefully.
	return &vault.ProviderError{Provider: "awskms", Op: op, What: "no usable answer", Sentinel: vault.ErrKeyUnavailable}
}

// httpStatus is the status code of the HTTP answer behind err, or 0.
func httpStatus(err error) int {
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) && respErr.Response != nil {
		return respErr.HTTPStatusCode()
	}
	return 0
}

var _ Client = (*kms.Client)(nil)

var _ vault.KeyProvider = (*Provider)(nil)
