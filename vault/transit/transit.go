// Package transit is the HashiCorp Vault Transit root-key provider: data keys
// come from datakey/plaintext, open with decrypt and move to the newest key
// version with rewrap (batched). The root key never leaves Vault.
//
// Binding to the data key's identity: every call sends the keyID as the
// Transit context. Vault uses a context only for derived keys (created with
// derived=true), and there it derives a separate key per context, so a
// wrapped key opened under another keyID fails. For a key that is not
// derived, Vault ignores the context and cannot bind: the binding then comes
// from the envelope's additional data in package vault, which names the
// subject and key version of every sealed record.
//
// The client is configured the usual way (api.DefaultConfig): VAULT_ADDR,
// VAULT_CACERT, VAULT_TOKEN and the other VAULT_* variables apply.
package transit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/kluis-dev/kluis/vault"
)

// providerName is what Describe reports as RootKeyInfo.Provider.
const providerName = "transit"

// dataKeySize is the length of a data key: AES-256.
const dataKeySize = 32

// Defaults.
const (
	// DefaultTimeout bounds each HTTP request to Vault, retries included,
	// unless VAULT_CLIENT_TIMEOUT says otherwise.
	DefaultTimeout = 10 * time.Second
	// DefaultBatchSize is how many keys one rewrap request carries.
	DefaultBatchSize = 250
)

// supportedTypes are the Transit key types kluis accepts as a root key: AES
// in GCM mode.
var supportedTypes = map[string]bool{"aes256-gcm96": true, "aes128-gcm96": true}

var (
	mountPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`)
	keyPattern   = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
)

// Provider wraps data keys under one Transit key. It is safe for concurrent
// use. Close it to stop token renewal.
type Provider struct {
	client    *api.Client
	mount     string
	key       string
	batchSize int
	// timeout bounds each call, retries and reading the answer included
	// (0: none but the caller's).
	timeout time.Duration
	logger  *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

type options struct {
	ctx       context.Context
	address   string
	token     string
	timeout   time.Duration
	batchSize int
	logger    *slog.Logger
	configure []func(*api.Config)
}

// Option configures a Provider.
type Option func(*options)

// WithContext ties background token renewal to ctx as well as to Close:
// renewal stops when either happens.
func WithContext(ctx context.Context) Option { return func(o *options) { o.ctx = ctx } }

// WithAddress sets Vault's address, overriding VAULT_ADDR.
func WithAddress(addr string) Option { return func(o *options) { o.address = addr } }

// WithToken sets the Vault token, overriding VAULT_TOKEN.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithTimeout bounds each request to Vault, retries included (default 10s,
// or VAULT_CLIENT_TIMEOUT when set). A shorter deadline on the caller's
// context wins.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithBatchSize sets how many keys one rewrap request carries (default 250).
func WithBatchSize(n int) Option { return func(o *options) { o.batchSize = n } }

// WithLogger sets where token-renewal trouble is reported (default
// slog.Default()). Nothing secret is logged.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithConfig adjusts the api.Config after the environment is read, for
// example its retry count and waits in tests.
func WithConfig(fn func(*api.Config)) Option {
	return func(o *options) { o.configure = append(o.configure, fn) }
}

// New returns a provider for the Transit key named key at mount, and starts
// renewing the token in the background if it is renewable. It does not check
// the key: use Describe at startup.
func New(mount, key string, opts ...Option) (*Provider, error) {
	mount = strings.Trim(mount, "/")
	if !mountPattern.MatchString(mount) || strings.Contains(mount, "..") {
		return nil, fmt.Errorf("transit: invalid mount %q", mount)
	}
	if !keyPattern.MatchString(key) || key == "." || key == ".." {
		return nil, fmt.Errorf("transit: invalid key name %q", key)
	}
	o := options{ctx: context.Background(), batchSize: DefaultBatchSize, logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	if o.batchSize < 1 {
		o.batchSize = 1
	}
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("transit: vault client configuration: %w", cfg.Error)
	}
	switch {
	case o.timeout > 0:
		cfg.Timeout = o.timeout
	case os.Getenv(api.EnvVaultClientTimeout) == "":
		cfg.Timeout = DefaultTimeout
	}
	if o.address != "" {
		cfg.Address = o.address
	}
	for _, fn := range o.configure {
		fn(cfg)
	}
	// vault/api applies its own Timeout as a context that WriteRaw cancels
	// as soon as it returns, before the caller has read the answer: a body
	// still on its way then fails to read ("context canceled"), the more
	// often the larger it is and the busier the machine (a rewrap batch
	// while kluis serves failed about half the time). So the client gets no
	// such timeout: each call here bounds itself with a context that ends
	// only after its answer is read (callContext), and the HTTP client's
	// Timeout, which keeps running until the body is read, bounds what the
	// library sends on its own (token renewal).
	timeout := cfg.Timeout
	cfg.Timeout = 0
	if timeout > 0 && cfg.HttpClient != nil {
		cfg.HttpClient.Timeout = timeout
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("transit: vault client: %w", err)
	}
	if o.token != "" {
		client.SetToken(o.token)
	}
	if client.Token() == "" {
		return nil, errors.New("transit: no Vault token: set VAULT_TOKEN")
	}
	ctx, cancel := context.WithCancel(o.ctx)
	p := &Provider{
		client:    client,
		mount:     mount,
		key:       key,
		batchSize: o.batchSize,
		timeout:   timeout,
		logger:    o.logger,
		cancel:    cancel,
		done:      make(chan struct{}),
	}
	go p.renewToken(ctx)
	return p, nil
}

// Close stops token renewal and waits for it to end. Safe to call twice.
// Calls made after Close still work; only renewal has stopped.
func (p *Provider) Close() error {
	p.once.Do(p.cancel)
	<-p.done
	return nil
}

// renewToken keeps a renewable token alive with the api's LifetimeWatcher
// until ctx ends. A token that cannot be renewed (a root token, a token
// without a TTL) is left alone. When renewal stops working, it looks the
// token up again after a pause, so a Vault that comes back is used again.
func (p *Provider) renewToken(ctx context.Context) {
	defer close(p.done)
	pause := time.Second
	for {
		again := p.watchToken(ctx)
		if !again {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(pause*2, time.Minute)
	}
}

// watchToken looks the token up and renews it until renewal ends; it
// reports whether to try again.
func (p *Provider) watchToken(ctx context.Context) bool {
	lookupCtx, cancel := p.callContext(ctx)
	secret, err := p.client.Auth().Token().LookupSelfWithContext(lookupCtx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			p.logger.Warn("transit: looking up the Vault token failed; will retry", "status", statusOf(err))
		}
		return true
	}
	renewable, _ := secret.TokenIsRenewable()
	ttl, _ := secret.TokenTTL()
	if !renewable || ttl <= 0 {
		p.logger.Debug("transit: the Vault token is not renewable or does not expire; not renewing it")
		return false
	}
	watcher, err := p.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{
		Secret: &api.Secret{Auth: &api.SecretAuth{
			ClientToken:   p.client.Token(),
			Renewable:     true,
			LeaseDuration: int(ttl.Seconds()),
		}},
	})
	if err != nil {
		p.logger.Error("transit: cannot watch the Vault token", "error", err)
		return false
	}
	go watcher.Start()
	for {
		select {
		case <-ctx.Done():
			watcher.Stop()
			<-watcher.DoneCh()
			return false
		case <-watcher.RenewCh():
			p.logger.Debug("transit: renewed the Vault token")
		case err := <-watcher.DoneCh():
			if err != nil {
				p.logger.Warn("transit: renewing the Vault token failed; will retry", "status", statusOf(err))
			} else {
				p.logger.Warn("transit: the Vault token reached its maximum TTL; it will expire unless replaced")
			}
			return true
		}
	}
}

// GenerateDataKey asks Transit for a fresh 256-bit data key (plaintext and
// wrapped) under the key's newest version, with keyID as context.
func (p *Provider) GenerateDataKey(ctx context.Context, keyID string) (vault.DataKey, error) {
	var out struct {
		Plaintext  string `json:"plaintext"`
		Ciphertext string `json:"ciphertext"`
	}
	err := p.write(ctx, "datakey", "datakey/plaintext/"+p.key, map[string]any{
		"bits":    dataKeySize * 8,
		"context": transitContext(keyID),
	}, &out, nil)
	if err != nil {
		return vault.DataKey{}, err
	}
	plaintext, err := decodeKey(out.Plaintext)
	if err != nil {
		return vault.DataKey{}, fmt.Errorf("transit: datakey: %w", err)
	}
	version, ok := ciphertextVersion(out.Ciphertext)
	if !ok {
		clear(plaintext)
		return vault.DataKey{}, fmt.Errorf("transit: datakey: unexpected ciphertext format: %w", vault.ErrKeyRefused)
	}
	return vault.DataKey{Plaintext: plaintext, Wrapped: vault.WrappedKey{Ciphertext: []byte(out.Ciphertext), RootVersion: version}}, nil
}

// Unwrap asks Transit to decrypt a wrapped data key with keyID as context.
func (p *Provider) Unwrap(ctx context.Context, keyID string, wrapped vault.WrappedKey) ([]byte, error) {
	ct := string(wrapped.Ciphertext)
	if err := checkWrapped(wrapped); err != nil {
		return nil, fmt.Errorf("transit: decrypt: %w", err)
	}
	var out struct {
		Plaintext string `json:"plaintext"`
	}
	err := p.write(ctx, "decrypt", "decrypt/"+p.key, map[string]any{
		"ciphertext": ct,
		"context":    transitContext(keyID),
	}, &out, nil)
	if err != nil {
		return nil, err
	}
	plaintext, err := decodeKey(out.Plaintext)
	if err != nil {
		return nil, fmt.Errorf("transit: decrypt: %w", err)
	}
	return plaintext, nil
}

// Rewrap moves keys to the Transit key's newest version with rewrap, in
// batches (batch_input); Vault decrypts and re-encrypts inside itself. An
// item that fails makes the whole call fail with ErrKeyRefused, naming the
// item's index; batches before it are not returned (rewrap is idempotent, so
// the caller runs it again).
func (p *Provider) Rewrap(ctx context.Context, keys []vault.RewrapItem) ([]vault.WrappedKey, error) {
	out := make([]vault.WrappedKey, 0, len(keys))
	for start := 0; start < len(keys); start += p.batchSize {
		batch := keys[start:min(start+p.batchSize, len(keys))]
		wrapped, err := p.rewrapBatch(ctx, start, batch)
		if err != nil {
			return nil, err
		}
		out = append(out, wrapped...)
	}
	return out, nil
}

type batchResult struct {
	Ciphertext string `json:"ciphertext"`
	Error      string `json:"error"`
}

func (p *Provider) rewrapBatch(ctx context.Context, offset int, batch []vault.RewrapItem) ([]vault.WrappedKey, error) {
	input := make([]map[string]string, len(batch))
	for i, item := range batch {
		if err := checkWrapped(item.Wrapped); err != nil {
			return nil, fmt.Errorf("transit: rewrap item %d: %w", offset+i, err)
		}
		input[i] = map[string]string{
			"ciphertext": string(item.Wrapped.Ciphertext),
			"context":    transitContext(item.KeyID),
		}
	}
	var out struct {
		BatchResults []batchResult `json:"batch_results"`
	}
	// Vault answers 400 when any item fails, with the per-item errors in
	// batch_results: read the body then too.
	err := p.write(ctx, "rewrap", "rewrap/"+p.key, map[string]any{"batch_input": input}, &out, func(status int) bool {
		return status == http.StatusBadRequest
	})
	if err != nil && out.BatchResults == nil {
		return nil, err
	}
	if len(out.BatchResults) != len(batch) {
		return nil, fmt.Errorf("transit: rewrap: %d results for %d keys: %w", len(out.BatchResults), len(batch), vault.ErrKeyRefused)
	}
	wrapped := make([]vault.WrappedKey, len(batch))
	for i, r := range out.BatchResults {
		version, ok := ciphertextVersion(r.Ciphertext)
		if r.Error != "" || !ok {
			// The item's error text is Vault's; it is not repeated here.
			return nil, fmt.Errorf("transit: rewrap item %d: Vault refused it: %w", offset+i, vault.ErrKeyRefused)
		}
		wrapped[i] = vault.WrappedKey{Ciphertext: []byte(r.Ciphertext), RootVersion: version}
	}
	return wrapped, nil
}

// Describe reads the Transit key and refuses one kluis cannot use as a root
// key: any type but AES-GCM.
func (p *Provider) Describe(ctx context.Context) (vault.RootKeyInfo, error) {
	var out struct {
		Type          string      `json:"type"`
		LatestVersion json.Number `json:"latest_version"`
		Derived       bool        `json:"derived"`
	}
	if err := p.read(ctx, "keys", "keys/"+p.key, &out); err != nil {
		return vault.RootKeyInfo{}, err
	}
	name := p.mount + "/" + p.key
	if !supportedTypes[out.Type] {
		return vault.RootKeyInfo{}, fmt.Errorf("transit: key %s is of type %q, not AES-GCM (aes256-gcm96): %w", name, out.Type, vault.ErrKeyRefused)
	}
	if n, err := out.LatestVersion.Int64(); err != nil || n < 1 {
		return vault.RootKeyInfo{}, fmt.Errorf("transit: key %s has no usable latest_version: %w", name, vault.ErrKeyRefused)
	}
	return vault.RootKeyInfo{Provider: providerName, KeyID: name, LatestVersion: out.LatestVersion.String()}, nil
}

// callContext bounds one call to Vault, answer read included: the caller
// cancels it once the body is read, never before.
func (p *Provider) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if p.timeout > 0 {
		return context.WithTimeout(ctx, p.timeout)
	}
	return context.WithCancel(ctx)
}

// write sends a PUT with a JSON body and decodes the answer's data into
// out. readBodyOn, if not nil, says for which error statuses the body is
// still decoded into out (the error is returned as well).
func (p *Provider) write(ctx context.Context, op, path string, body any, out any, readBodyOn func(int) bool) error {
	ctx, cancel := p.callContext(ctx)
	defer cancel() // only after the answer is read: see New
	raw, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("transit: %s: encode request: %w", op, vault.ErrKeyRefused)
	}
	resp, err := p.client.Logical().WriteRawWithContext(ctx, p.mount+"/"+path, raw)
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		perr := classify(ctx, op, resp, err)
		if resp != nil && readBodyOn != nil && readBodyOn(resp.StatusCode) {
			// A body that does not decode leaves out empty; the caller
			// then returns perr.
			_ = decodeData(resp.Body, out)
		}
		return perr
	}
	if err := decodeData(resp.Body, out); err != nil {
		return unreadable(ctx, op, err)
	}
	return nil
}

// read sends a GET and decodes the answer's data into out.
func (p *Provider) read(ctx context.Context, op, path string, out any) error {
	ctx, cancel := p.callContext(ctx)
	defer cancel()
	resp, err := p.client.Logical().ReadRawWithContext(ctx, p.mount+"/"+path)
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		return classify(ctx, op, resp, err)
	}
	if resp == nil {
		return &vault.ProviderError{Provider: "transit", Op: op, What: "no answer from Vault", Sentinel: vault.ErrKeyUnavailable}
	}
	if resp.StatusCode != http.StatusOK {
		// ReadRaw lets 404 through without an error.
		return classify(ctx, op, resp, fmt.Errorf("status %d", resp.StatusCode))
	}
	if err := decodeData(resp.Body, out); err != nil {
		return unreadable(ctx, op, err)
	}
	return nil
}

// unreadable is an answer whose body could not be read or decoded: cut
// short (the deadline passed while it arrived, the connection dropped) or
// not Vault's shape. Either way the provider did not answer usably.
func unreadable(ctx context.Context, op string, err error) error {
	what := "unreadable answer"
	var ctxErr error
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		what, ctxErr = "timed out reading the answer", context.DeadlineExceeded
	case errors.Is(ctx.Err(), context.Canceled) || errors.Is(err, context.Canceled):
		what, ctxErr = "canceled reading the answer", context.Canceled
	case errors.Is(err, io.ErrUnexpectedEOF):
		what = "answer cut short"
	}
	return &vault.ProviderError{Provider: "transit", Op: op, What: what, Sentinel: vault.ErrKeyUnavailable, CtxErr: ctxErr}
}

func decodeData(body io.Reader, out any) error {
	var envelope struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(body, 64<<20)).Decode(&envelope); err != nil {
		return err
	}
	if len(envelope.Data) == 0 || bytes.Equal(envelope.Data, []byte("null")) {
		return errors.New("no data")
	}
	dec := json.NewDecoder(bytes.NewReader(envelope.Data))
	dec.UseNumber()
	return dec.Decode(out)
}

// transitContext is the Transit context for a data key: its identity,
// base64 as Transit wants it.
func transitContext(keyID string) string {
	return base64.StdEncoding.EncodeToString([]byte(keyID))
}

// checkWrapped refuses, without asking Vault, a wrapped key that is not a
// Transit ciphertext or whose stored RootVersion disagrees with it.
func checkWrapped(w vault.WrappedKey) error {
	version, ok := ciphertextVersion(string(w.Ciphertext))
	if !ok {
		return fmt.Errorf("not a Transit ciphertext: %w", vault.ErrKeyRefused)
	}
	if w.RootVersion != "" && w.RootVersion != version {
		return fmt.Errorf("stored root version does not match the ciphertext: %w", vault.ErrKeyRefused)
	}
	return nil
}

// ciphertextVersion reads N from a "vault:vN:..." ciphertext.
func ciphertextVersion(ct string) (string, bool) {
	rest, ok := strings.CutPrefix(ct, "vault:v")
	if !ok {
		return "", false
	}
	v, payload, ok := strings.Cut(rest, ":")
	if !ok || payload == "" {
		return "", false
	}
	if n, err := strconv.Atoi(v); err != nil || n < 1 || strconv.Itoa(n) != v {
		return "", false
	}
	return v, true
}

// decodeKey decodes a base64 plaintext that must be a 32-byte data key.
func decodeKey(b64 string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) != dataKeySize {
		clear(key)
		return nil, fmt.Errorf("answer is not a %d-byte data key: %w", dataKeySize, vault.ErrKeyRefused)
	}
	return key, nil
}

// classify maps a failed request to vault.ErrKeyUnavailable (sealed,
// standby, throttled, 5xx, unreachable, timed out) or vault.ErrKeyRefused
// (400, 403, 404 and other answers that say no).
func classify(ctx context.Context, op string, resp *api.Response, err error) error {
	if resp != nil && resp.StatusCode >= 400 {
		status := resp.StatusCode
		what := fmt.Sprintf("HTTP %d", status)
		var respErr *api.ResponseError
		if errors.As(err, &respErr) {
			switch {
			case hasError(respErr, "Vault is sealed"):
				what += " (sealed)"
			case hasError(respErr, "permission denied"):
				what += " (permission denied)"
			}
		}
		switch {
		case status == http.StatusTooManyRequests, status == http.StatusPreconditionFailed, status >= 500:
			return &vault.ProviderError{Provider: "transit", Op: op, What: what, Sentinel: vault.ErrKeyUnavailable}
		default:
			return &vault.ProviderError{Provider: "transit", Op: op, What: what, Sentinel: vault.ErrKeyRefused}
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &vault.ProviderError{Provider: "transit", Op: op, What: "timed out", Sentinel: vault.ErrKeyUnavailable, CtxErr: context.DeadlineExceeded}
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return &vault.ProviderError{Provider: "transit", Op: op, What: "canceled", Sentinel: vault.ErrKeyUnavailable, CtxErr: context.Canceled}
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return &vault.ProviderError{Provider: "transit", Op: op, What: "timed out", Sentinel: vault.ErrKeyUnavailable}
	}
	return &vault.ProviderError{Provider: "transit", Op: op, What: "no answer from Vault", Sentinel: vault.ErrKeyUnavailable}
}

func hasError(e *api.ResponseError, text string) bool {
	for _, s := range e.Errors {
		if strings.Contains(s, text) {
			return true
		}
	}
	return false
}

// statusOf names an error for a log line without its text.
func statusOf(err error) string {
	var respErr *api.ResponseError
	if errors.As(err, &respErr) {
		return strconv.Itoa(respErr.StatusCode)
	}
	return "no answer"
}

var _ vault.KeyProvider = (*Provider)(nil)
