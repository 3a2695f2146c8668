// Package transittest is an in-process HashiCorp Vault for tests: an HTTP
// server that speaks the Transit secrets engine's API for the endpoints
// kluis uses (datakey, decrypt, rewrap with batch_input, keys, rotate) and
// the token endpoints the client needs (lookup-self, renew-self).
//
// It really encrypts: each Transit key has an AES-GCM key per version,
// ciphertexts are "vault:v<N>:<base64>", derived keys need a context, and
// errors come in Vault's shape ({"errors": [...]}). Knobs let a test seal
// Vault, stop it, add latency, send answers in two parts with a pause
// between, change the token's lifetime, and count calls.
package transittest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Defaults for NewServer.
const (
	DefaultMount = "transit"
	DefaultKey   = "kluis"
	// DefaultToken is the token the server accepts until SetToken changes it.
	DefaultToken = "transittest-root-token"
)

// Call names for Calls.
const (
	CallDatakey    = "datakey"
	CallDecrypt    = "decrypt"
	CallRewrap     = "rewrap"
	CallKeys       = "keys"
	CallRotate     = "rotate"
	CallLookupSelf = "lookup-self"
	CallRenewSelf  = "renew-self"
)

// Server is a fake Vault with one Transit mount. Create it with NewServer; it
// closes with the test.
type Server struct {
	// URL is the server's address, for VAULT_ADDR or api.Config.Address.
	URL string
	// Mount is the Transit mount path.
	Mount string

	srv     *httptest.Server
	closing chan struct{}
	once    sync.Once

	mu        sync.Mutex
	keys      map[string]*transitKey
	token     string
	renewable bool
	ttl       time.Duration // 0: never expires (a root token)
	expires   time.Time
	sealed    bool
	latency   time.Duration
	bodyPause time.Duration
	calls     map[string]int
}

type transitKey struct {
	typ      string
	derived  bool
	versions [][]byte // raw key material; index i is version i+1
}

// NewServer starts a fake Vault on 127.0.0.1 with the Transit mount
// "transit", an aes256-gcm96 key "kluis" (not derived), and a root token
// (DefaultToken) that never expires.
func NewServer(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		Mount:   DefaultMount,
		closing: make(chan struct{}),
		keys:    make(map[string]*transitKey),
		token:   DefaultToken,
		calls:   make(map[string]int),
	}
	s.CreateKey(DefaultKey, "aes256-gcm96", false)
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.srv.URL
	t.Cleanup(s.Close)
	return s
}

// Client returns an HTTP client for this server with a transport of its own.
// Tests that talk to the server directly should use it rather than
// http.DefaultClient: every httptest server's Close calls
// http.DefaultTransport.CloseIdleConnections, so a parallel test closing its
// server can break a request in flight on the shared transport ("transport
// connection broken: http: CloseIdleConnections called"), and a PUT or POST
// is not retried.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Close stops the server. Safe to call twice.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.closing)
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
}

// Stop makes Vault unreachable: the listener closes and connections are cut,
// so clients see connection refused.
func (s *Server) Stop() { s.Close() }

// CreateKey adds a Transit key of type typ ("aes256-gcm96", "aes128-gcm96",
// or any other name, which the server reports but cannot encrypt with).
// derived keys need a context on every call, as in Vault.
func (s *Server) CreateKey(name, typ string, derived bool) {
	k := &transitKey{typ: typ, derived: derived}
	k.versions = append(k.versions, newKeyMaterial(typ))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[name] = k
}

// Rotate adds a new version to the named key.
func (s *Server) Rotate(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rotate(name)
}

func (s *Server) rotate(name string) bool {
	k, ok := s.keys[name]
	if !ok {
		return false
	}
	k.versions = append(k.versions, newKeyMaterial(k.typ))
	return true
}

// LatestVersion is the named key's newest version.
func (s *Server) LatestVersion(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys[name].versions)
}

// SetToken makes token the only one accepted. A renewable token with a ttl
// expires unless renewed (renew-self extends it by ttl); ttl 0 never expires.
func (s *Server) SetToken(token string, ttl time.Duration, renewable bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token, s.ttl, s.renewable = token, ttl, renewable
	s.expires = time.Now().Add(ttl)
}

// Seal makes every request answer 503 {"errors":["Vault is sealed"]}, as a
// sealed Vault does; sealed false unseals.
func (s *Server) Seal(sealed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sealed = sealed
}

// SetLatency delays every answer by d; the delay ends early if the client
// gives up.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetSlowAnswers makes every answer arrive in two parts: the status, headers
// and first half of the body at once, the rest after pause (as from a busy
// Vault or a slow network). A client that stops reading, or gives up on its
// request, ends the pause early. 0 turns it off.
func (s *Server) SetSlowAnswers(pause time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bodyPause = pause
}

// Calls is how many requests reached the named endpoint (CallDatakey,
// CallDecrypt, ...), failed ones included.
func (s *Server) Calls(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[name]
}

// TotalCalls is how many requests reached the server, every operation and
// failed ones included: what a benchmark counts as provider calls.
func (s *Server) TotalCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.calls {
		n += c
	}
	return n
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	call, rest := s.route(r.URL.Path)
	s.mu.Lock()
	if call != "" {
		s.calls[call]++
	}
	latency, sealed, pause := s.latency, s.sealed, s.bodyPause
	s.mu.Unlock()
	if pause > 0 {
		w = &slowWriter{ResponseWriter: w, ctx: r.Context(), closing: s.closing, pause: pause}
	}

	if !s.wait(r.Context(), latency) {
		return
	}
	if sealed {
		writeErrors(w, http.StatusServiceUnavailable, "Vault is sealed")
		return
	}
	if call == "" {
		writeErrors(w, http.StatusNotFound)
		return
	}
	if !s.authorized(r.Header.Get("X-Vault-Token")) {
		writeErrors(w, http.StatusForbidden, "permission denied")
		return
	}
	if (call == CallKeys || call == CallLookupSelf) != (r.Method == http.MethodGet) {
		writeErrors(w, http.StatusMethodNotAllowed, "unsupported operation")
		return
	}
	status, body := s.handle(call, rest, r)
	writeJSON(w, status, body)
}

// route names the endpoint a path is for and returns the path below the
// mount; call is "" for a path this server does not know.
func (s *Server) route(path string) (call, rest string) {
	switch path {
	case "/v1/auth/token/lookup-self":
		return CallLookupSelf, ""
	case "/v1/auth/token/renew-self":
		return CallRenewSelf, ""
	}
	rest, ok := strings.CutPrefix(path, "/v1/"+s.Mount+"/")
	if !ok {
		return "", ""
	}
	for _, p := range []struct{ prefix, call string }{
		{"datakey/plaintext/", CallDatakey},
		{"datakey/wrapped/", CallDatakey},
		{"decrypt/", CallDecrypt},
		{"rewrap/", CallRewrap},
	} {
		if name, ok := strings.CutPrefix(rest, p.prefix); ok && name != "" && !strings.Contains(name, "/") {
			return p.call, rest
		}
	}
	if name, ok := strings.CutPrefix(rest, "keys/"); ok && name != "" {
		if n, ok := strings.CutSuffix(name, "/rotate"); ok && n != "" && !strings.Contains(n, "/") {
			return CallRotate, rest
		}
		if !strings.Contains(name, "/") {
			return CallKeys, rest
		}
	}
	return "", ""
}

func (s *Server) authorized(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if token == "" || token != s.token {
		return false
	}
	return s.ttl == 0 || time.Now().Before(s.expires)
}

// handle runs one authorized request and returns its status and body.
func (s *Server) handle(call, rest string, r *http.Request) (int, any) {
	var body map[string]any
	if r.Method != http.MethodGet {
		dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 32<<20))
		if err := dec.Decode(&body); err != nil && err.Error() != "EOF" {
			return errorBody(http.StatusBadRequest, "failed to parse JSON input")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := rest[strings.LastIndex(rest, "/")+1:]
	switch call {
	case CallLookupSelf:
		return s.lookupSelf()
	case CallRenewSelf:
		return s.renewSelf()
	case CallRotate:
		if !s.rotate(strings.TrimSuffix(strings.TrimPrefix(rest, "keys/"), "/rotate")) {
			return errorBody(http.StatusBadRequest, "key not found")
		}
		return http.StatusNoContent, nil
	case CallKeys:
		return s.readKey(name)
	case CallDatakey:
		return s.datakey(name, strings.HasPrefix(rest, "datakey/plaintext/"), body)
	case CallDecrypt:
		return s.decrypt(name, body)
	case CallRewrap:
		return s.rewrap(name, body)
	}
	return errorBody(http.StatusNotFound)
}

func (s *Server) lookupSelf() (int, any) {
	ttl := 0
	if s.ttl > 0 {
		ttl = int(time.Until(s.expires).Seconds())
	}
	return http.StatusOK, map[string]any{"data": map[string]any{
		"id":        s.token,
		"ttl":       ttl,
		"renewable": s.renewable,
		"policies":  []string{"kluis"},
	}}
}

func (s *Server) renewSelf() (int, any) {
	if !s.renewable {
		return errorBody(http.StatusBadRequest, "lease is not renewable")
	}
	s.expires = time.Now().Add(s.ttl)
	return http.StatusOK, map[string]any{"auth": map[string]any{
		"client_token":   s.token,
		"renewable":      true,
		"lease_duration": int(s.ttl.Seconds()),
		"policies":       []string{"kluis"},
	}}
}

func (s *Server) readKey(name string) (int, any) {
	k, ok := s.keys[name]
	if !ok {
		return errorBody(http.StatusNotFound)
	}
	versions := make(map[string]int64, len(k.versions))
	for i := range k.versions {
		versions[strconv.Itoa(i+1)] = time.Now().Unix()
	}
	return http.StatusOK, map[string]any{"data": map[string]any{
		"name":                   name,
		"type":                   k.typ,
		"derived":                k.derived,
		"latest_version":         len(k.versions),
		"min_decryption_version": 1,
		"min_encryption_version": 0,
		"keys":                   versions,
		"supports_encryption":    k.typ == "aes256-gcm96" || k.typ == "aes128-gcm96",
		"deletion_allowed":       false,
		"exportable":             false,
	}}
}

func (s *Server) datakey(name string, withPlaintext bool, body map[string]any) (int, any) {
	k, ok := s.keys[name]
	if !ok {
		return errorBody(http.StatusBadRequest, "encryption key not found")
	}
	bits := 256
	if b, ok := body["bits"].(float64); ok {
		bits = int(b)
	}
	if bits != 128 && bits != 256 && bits != 512 {
		return errorBody(http.StatusBadRequest, "invalid bit length")
	}
	plaintext := make([]byte, bits/8)
	_, _ = rand.Read(plaintext) // crypto/rand.Read never fails (Go 1.24+)
	ct, err := k.encrypt(stringField(body, "context"), plaintext)
	if err != "" {
		return errorBody(http.StatusBadRequest, err)
	}
	data := map[string]any{"ciphertext": ct, "key_version": len(k.versions)}
	if withPlaintext {
		data["plaintext"] = base64.StdEncoding.EncodeToString(plaintext)
	}
	return http.StatusOK, map[string]any{"data": data}
}

func (s *Server) decrypt(name string, body map[string]any) (int, any) {
	k, ok := s.keys[name]
	if !ok {
		return errorBody(http.StatusBadRequest, "encryption key not found")
	}
	plaintext, err := k.decrypt(stringField(body, "context"), stringField(body, "ciphertext"))
	if err != "" {
		return errorBody(http.StatusBadRequest, err)
	}
	return http.StatusOK, map[string]any{"data": map[string]any{"plaintext": base64.StdEncoding.EncodeToString(plaintext)}}
}

// rewrap answers like Vault 1.x: a single item inline, a batch as
// batch_results with per-item errors; any item error makes the status 400.
func (s *Server) rewrap(name string, body map[string]any) (int, any) {
	k, ok := s.keys[name]
	if !ok {
		return errorBody(http.StatusBadRequest, "encryption key not found")
	}
	rawBatch, isBatch := body["batch_input"]
	if !isBatch {
		ct, err := k.rewrap(stringField(body, "context"), stringField(body, "ciphertext"))
		if err != "" {
			return errorBody(http.StatusBadRequest, err)
		}
		return http.StatusOK, map[string]any{"data": map[string]any{"ciphertext": ct, "key_version": len(k.versions)}}
	}
	items, ok := rawBatch.([]any)
	if !ok || len(items) == 0 {
		return errorBody(http.StatusBadRequest, "missing batch input to process")
	}
	results := make([]map[string]any, len(items))
	failed := false
	for i, raw := range items {
		item, _ := raw.(map[string]any)
		ct, err := k.rewrap(stringField(item, "context"), stringField(item, "ciphertext"))
		if err != "" {
			results[i] = map[string]any{"error": err}
			failed = true
			continue
		}
		results[i] = map[string]any{"ciphertext": ct, "key_version": len(k.versions)}
	}
	status := http.StatusOK
	if failed {
		status = http.StatusBadRequest
	}
	return status, map[string]any{"data": map[string]any{"batch_results": results}}
}

func (k *transitKey) rewrap(context, ciphertext string) (string, string) {
	plaintext, err := k.decrypt(context, ciphertext)
	if err != "" {
		return "", err
	}
	defer clear(plaintext)
	return k.encrypt(context, plaintext)
}

// encrypt seals plaintext under the newest version; the second result is a
// Vault-style user error.
func (k *transitKey) encrypt(context string, plaintext []byte) (string, string) {
	version := len(k.versions)
	aead, err := k.aead(version, context)
	if err != "" {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails (Go 1.24+)
	sealed := aead.Seal(nonce, nonce, plaintext, nil)
	return fmt.Sprintf("vault:v%d:%s", version, base64.StdEncoding.EncodeToString(sealed)), ""
}

func (k *transitKey) decrypt(context, ciphertext string) ([]byte, string) {
	if ciphertext == "" {
		return nil, "missing ciphertext to decrypt"
	}
	rest, ok := strings.CutPrefix(ciphertext, "vault:v")
	if !ok {
		return nil, "invalid ciphertext: no prefix"
	}
	vs, b64, ok := strings.Cut(rest, ":")
	version, err := strconv.Atoi(vs)
	if !ok || err != nil || version < 1 {
		return nil, "invalid ciphertext: could not parse version"
	}
	if version > len(k.versions) {
		return nil, "invalid ciphertext: version is too new"
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil {
		return nil, "invalid ciphertext: could not decode"
	}
	aead, uerr := k.aead(version, context)
	if uerr != "" {
		return nil, uerr
	}
	if len(raw) < aead.NonceSize()+aead.Overhead() {
		return nil, "invalid ciphertext: too short"
	}
	plaintext, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], nil)
	if err != nil {
		return nil, "cipher: message authentication failed"
	}
	return plaintext, ""
}

// aead gives the cipher for a version, derived from context for a derived
// key (HKDF-SHA256 with the context as info).
func (k *transitKey) aead(version int, b64Context string) (cipher.AEAD, string) {
	material := k.versions[version-1]
	if k.derived {
		if b64Context == "" {
			return nil, "missing 'context' for key derivation; the key was created using a derived key, which means additional, per-request information must be included in order to perform operations with the key"
		}
		context, err := base64.StdEncoding.DecodeString(b64Context)
		if err != nil {
			return nil, "failed to base64-decode context"
		}
		material, err = hkdf.Key(sha256.New, material, nil, string(context), len(material))
		if err != nil {
			return nil, "key derivation failed"
		}
	}
	a := aeadFor(k.typ, material)
	if a == nil {
		return nil, fmt.Sprintf("key type %s does not support encryption", k.typ)
	}
	return a, ""
}

// aeadFor builds the AEAD for an AES-GCM key type; nil for other types.
func aeadFor(typ string, material []byte) cipher.AEAD {
	if typ != "aes256-gcm96" && typ != "aes128-gcm96" {
		return nil
	}
	block, err := aes.NewCipher(material)
	if err != nil {
		return nil
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		return nil
	}
	return a
}

func newKeyMaterial(typ string) []byte {
	size := 32
	if typ == "aes128-gcm96" {
		size = 16
	}
	b := make([]byte, size)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return b
}

func stringField(body map[string]any, name string) string {
	v, _ := body[name].(string)
	return v
}

func (s *Server) wait(ctx context.Context, latency time.Duration) bool {
	if latency <= 0 {
		return true
	}
	t := time.NewTimer(latency)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.closing:
		return false
	}
}

// slowWriter sends the first half of a body, flushes it, waits, then sends
// the rest.
type slowWriter struct {
	http.ResponseWriter
	ctx     context.Context
	closing chan struct{}
	pause   time.Duration
}

func (w *slowWriter) Write(b []byte) (int, error) {
	half := len(b) / 2
	n, err := w.ResponseWriter.Write(b[:half])
	if err != nil {
		return n, err
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	t := time.NewTimer(w.pause)
	defer t.Stop()
	select {
	case <-t.C:
	case <-w.ctx.Done():
		return n, w.ctx.Err()
	case <-w.closing:
		return n, http.ErrServerClosed
	}
	m, err := w.ResponseWriter.Write(b[half:])
	return n + m, err
}

func errorBody(status int, errs ...string) (int, any) {
	if errs == nil {
		errs = []string{}
	}
	return status, map[string]any{"errors": errs}
}

func writeErrors(w http.ResponseWriter, status int, errs ...string) {
	_, body := errorBody(status, errs...)
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body) // the client sees a broken body
}
