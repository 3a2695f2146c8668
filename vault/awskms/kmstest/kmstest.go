// Package kmstest is an in-process AWS KMS for tests: an HTTP server that
// speaks the KMS JSON protocol (awsJson1.1: POST /, X-Amz-Target
// TrentService.<Operation>) for GenerateDataKey, Decrypt, ReEncrypt and
// DescribeKey, so that tests drive the real SDK client against it.
//
// It really encrypts: each key has AES-256 backing keys, one per version;
// a ciphertext blob names its key and version and is bound to its encryption
// context, as in KMS. Knobs let a test rotate a key, disable it, inject
// errors for the next calls, add latency, hang, stop the server, and count
// calls per operation.
package kmstest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Operation names, as they appear after "TrentService." in X-Amz-Target.
const (
	OpGenerateDataKey = "GenerateDataKey"
	OpDecrypt         = "Decrypt"
	OpReEncrypt       = "ReEncrypt"
	OpDescribeKey     = "DescribeKey"
)

// Key states, as KMS names them.
const (
	StateEnabled         = "Enabled"
	StateDisabled        = "Disabled"
	StatePendingDeletion = "PendingDeletion"
)

// Static test identity: the region and account every key lives in, and the
// credentials a client uses (the server checks only that requests are
// signed, not the signature).
const (
	Region          = "us-east-1"
	AccountID       = "111122223333"
	AccessKeyID     = "AKIAKMSTEST"
	SecretAccessKey = "kmstest-secret"
)

// blobMagic opens every ciphertext blob this server makes, so that a blob
// from elsewhere is refused as invalid.
const blobMagic = 0x4b

// statusOf gives the HTTP status KMS answers with for each error type.
var statusOf = map[string]int{
	"ThrottlingException":        http.StatusBadRequest,
	"AccessDeniedException":      http.StatusBadRequest,
	"DisabledException":          http.StatusBadRequest,
	"KMSInvalidStateException":   http.StatusBadRequest,
	"InvalidCiphertextException": http.StatusBadRequest,
	"IncorrectKeyException":      http.StatusBadRequest,
	"NotFoundException":          http.StatusBadRequest,
	"ValidationException":        http.StatusBadRequest,
	"InvalidKeyUsageException":   http.StatusBadRequest,
	"UnknownOperationException":  http.StatusBadRequest,
	"SerializationException":     http.StatusBadRequest,
	"MissingAuthenticationToken": http.StatusForbidden,
	"KMSInternalException":       http.StatusInternalServerError,
	"KeyUnavailableException":    http.StatusInternalServerError,
	"DependencyTimeoutException": http.StatusServiceUnavailable,
}

// Server is a fake KMS. Create it with NewServer; it closes with the test.
type Server struct {
	// URL is the server's base endpoint, for the SDK's BaseEndpoint or
	// AWS_ENDPOINT_URL_KMS.
	URL string

	srv     *httptest.Server
	closing chan struct{}
	once    sync.Once

	mu         sync.Mutex
	keys       map[string]*key   // by key id
	aliases    map[string]string // alias name → key id
	defaultKey string
	injections []injection
	latency    time.Duration
	hang       chan struct{} // non-nil while hanging; closed to release
	calls      map[string]int
}

type key struct {
	id, arn  string
	state    string
	spec     string
	usage    string
	versions []cipher.AEAD // index i is version i+1
	created  time.Time
}

type injection struct {
	errType string
	left    int // < 0: forever
	ops     map[string]bool
}

// NewServer starts a fake KMS on 127.0.0.1 with one enabled symmetric key
// (see KeyID, KeyARN) and the alias "alias/kluis" for it.
func NewServer(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		closing: make(chan struct{}),
		keys:    make(map[string]*key),
		aliases: make(map[string]string),
		calls:   make(map[string]int),
	}
	s.defaultKey = s.CreateKey("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")
	s.aliases["alias/kluis"] = s.defaultKey
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.srv.URL
	t.Cleanup(s.Close)
	return s
}

// Close releases hanging requests and stops the server. Safe to call twice.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.closing)
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
}

// Stop makes the server unreachable, as a network partition or a dead
// endpoint would: the listener closes and open connections are cut.
func (s *Server) Stop() { s.Close() }

// KeyID is the default key's id (a UUID-like string).
func (s *Server) KeyID() string { return s.defaultKey }

// KeyARN is the default key's ARN.
func (s *Server) KeyARN() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[s.defaultKey].arn
}

// CreateKey adds an enabled key of the given spec and usage (for example
// "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", or "RSA_2048", "SIGN_VERIFY") and
// returns its id.
func (s *Server) CreateKey(spec, usage string) string {
	id := newKeyID()
	k := &key{
		id:      id,
		arn:     fmt.Sprintf("arn:aws:kms:%s:%s:key/%s", Region, AccountID, id),
		state:   StateEnabled,
		spec:    spec,
		usage:   usage,
		created: time.Now().UTC(),
	}
	k.versions = append(k.versions, newAEAD())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[id] = k
	return id
}

// Rotate gives the key (id, ARN or alias; "" for the default key) new
// backing material. Old ciphertexts still decrypt; new ones, and ReEncrypt,
// use the new version.
func (s *Server) Rotate(keyID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.mustKey(keyID)
	k.versions = append(k.versions, newAEAD())
}

// Versions is how many backing versions the key has.
func (s *Server) Versions(keyID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mustKey(keyID).versions)
}

// SetKeyState sets the key's state (StateEnabled, StateDisabled,
// StatePendingDeletion). A disabled key refuses with DisabledException, a
// key pending deletion with KMSInvalidStateException.
func (s *Server) SetKeyState(keyID, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustKey(keyID).state = state
}

// DisableKey disables the key: SetKeyState(keyID, StateDisabled).
func (s *Server) DisableKey(keyID string) { s.SetKeyState(keyID, StateDisabled) }

// InjectError makes the next n calls (all of them if n < 0) to ops (any
// operation if none are given) fail with errType, for example
// "ThrottlingException", "AccessDeniedException", "KMSInvalidStateException",
// "KMSInternalException". Injections queue: the first with calls left wins.
func (s *Server) InjectError(errType string, n int, ops ...string) {
	in := injection{errType: errType, left: n}
	if len(ops) > 0 {
		in.ops = make(map[string]bool, len(ops))
		for _, op := range ops {
			in.ops[op] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.injections = append(s.injections, in)
}

// ClearErrors drops every pending injection.
func (s *Server) ClearErrors() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.injections = nil
}

// SetLatency delays every answer by d (25 ms is a fair stand-in for KMS in
// benchmarks). The delay ends early if the client gives up.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// Hang makes every request wait, without answering, until the client gives
// up, Release is called or the server closes: a KMS that accepted the
// connection and went quiet.
func (s *Server) Hang() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hang == nil {
		s.hang = make(chan struct{})
	}
}

// Release ends Hang: waiting requests and new ones are answered.
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hang != nil {
		close(s.hang)
		s.hang = nil
	}
}

// Calls is how many requests reached op, including failed ones.
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
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

// BlobKey reads the key id and backing version a ciphertext blob of this
// server names, so that tests can see what KMS hides from its clients.
func BlobKey(blob []byte) (keyID string, version int, ok bool) {
	h, ok := parseBlob(blob)
	if !ok {
		return "", 0, false
	}
	return h.keyID, h.version, true
}

// mustKey resolves a key reference; the caller holds s.mu. It panics on an
// unknown key: that is a mistake in the test, not a KMS answer.
func (s *Server) mustKey(ref string) *key {
	if ref == "" {
		ref = s.defaultKey
	}
	k := s.resolve(ref)
	if k == nil {
		panic("kmstest: no key " + ref)
	}
	return k
}

// resolve finds a key by id, ARN, alias name or alias ARN; the caller holds
// s.mu.
func (s *Server) resolve(ref string) *key {
	if k, ok := s.keys[ref]; ok {
		return k
	}
	if i := strings.Index(ref, ":key/"); strings.HasPrefix(ref, "arn:aws:kms:") && i >= 0 {
		if k, ok := s.keys[ref[i+len(":key/"):]]; ok && k.arn == ref {
			return k
		}
		return nil
	}
	if i := strings.Index(ref, ":alias/"); strings.HasPrefix(ref, "arn:aws:kms:") && i >= 0 {
		ref = ref[i+1:]
	}
	if id, ok := s.aliases[ref]; ok {
		return s.keys[id]
	}
	return nil
}

// apiError is a KMS error answer.
type apiError struct {
	Type    string `json:"__type"`
	Message string `json:"message"`
}

func errorf(errType, format string, args ...any) *apiError {
	return &apiError{Type: errType, Message: fmt.Sprintf(format, args...)}
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	op, apiErr := s.checkRequest(r)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	s.mu.Lock()
	s.calls[op]++
	latency, hang := s.latency, s.hang
	injected := s.takeInjection(op)
	s.mu.Unlock()

	if !s.wait(r.Context(), latency, hang) {
		return
	}
	if injected != "" {
		writeError(w, errorf(injected, "injected by kmstest"))
		return
	}
	var out any
	var err *apiError
	switch op {
	case OpGenerateDataKey:
		out, err = s.generateDataKey(r)
	case OpDecrypt:
		out, err = s.decrypt(r)
	case OpReEncrypt:
		out, err = s.reEncrypt(r)
	case OpDescribeKey:
		out, err = s.describeKey(r)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Requestid", newKeyID())
	_ = json.NewEncoder(w).Encode(out) // the client sees a broken body
}

// checkRequest checks the protocol envelope and returns the operation.
func (s *Server) checkRequest(r *http.Request) (string, *apiError) {
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		return "", errorf("UnknownOperationException", "KMS answers POST / only")
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-amz-json-1.1" {
		return "", errorf("SerializationException", "unexpected Content-Type %q", ct)
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ") {
		return "", errorf("MissingAuthenticationToken", "request is not signed")
	}
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
	switch {
	case !ok:
		return "", errorf("UnknownOperationException", "missing X-Amz-Target")
	case op == OpGenerateDataKey, op == OpDecrypt, op == OpReEncrypt, op == OpDescribeKey:
		return op, nil
	default:
		return "", errorf("UnknownOperationException", "kmstest does not do %s", op)
	}
}

// takeInjection consumes one injected error for op, if any; the caller
// holds s.mu.
func (s *Server) takeInjection(op string) string {
	for i := range s.injections {
		in := &s.injections[i]
		if in.left == 0 || (in.ops != nil && !in.ops[op]) {
			continue
		}
		if in.left > 0 {
			in.left--
		}
		return in.errType
	}
	return ""
}

// wait applies latency and hang; it reports false if the request should be
// dropped because the client left or the server is closing.
func (s *Server) wait(ctx context.Context, latency time.Duration, hang chan struct{}) bool {
	if hang != nil {
		select {
		case <-hang:
		case <-ctx.Done():
			return false
		case <-s.closing:
			return false
		}
	}
	if latency > 0 {
		t := time.NewTimer(latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		case <-s.closing:
			return false
		}
	}
	return true
}

func writeError(w http.ResponseWriter, e *apiError) {
	status, ok := statusOf[e.Type]
	if !ok {
		status = http.StatusBadRequest
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Requestid", newKeyID())
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(e) // the client sees a broken body
}

func decode(r *http.Request, v any) *apiError {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	if err := dec.Decode(v); err != nil {
		return errorf("SerializationException", "cannot read request body")
	}
	return nil
}

// usable finds an enabled symmetric encryption key for a cryptographic
// operation; the caller holds s.mu.
func (s *Server) usable(ref string) (*key, *apiError) {
	if ref == "" {
		return nil, errorf("ValidationException", "KeyId is required")
	}
	k := s.resolve(ref)
	if k == nil {
		return nil, errorf("NotFoundException", "key %s does not exist", ref)
	}
	switch k.state {
	case StateEnabled:
	case StateDisabled:
		return nil, errorf("DisabledException", "%s is disabled", k.arn)
	default:
		return nil, errorf("KMSInvalidStateException", "%s is %s", k.arn, k.state)
	}
	if k.spec != "SYMMETRIC_DEFAULT" || k.usage != "ENCRYPT_DECRYPT" {
		return nil, errorf("InvalidKeyUsageException", "%s cannot encrypt", k.arn)
	}
	return k, nil
}

type generateDataKeyInput struct {
	KeyID             string            `json:"KeyId"`
	KeySpec           string            `json:"KeySpec"`
	NumberOfBytes     int               `json:"NumberOfBytes"`
	EncryptionContext map[string]string `json:"EncryptionContext"`
}

type generateDataKeyOutput struct {
	CiphertextBlob []byte `json:"CiphertextBlob"`
	Plaintext      []byte `json:"Plaintext"`
	KeyID          string `json:"KeyId"`
}

func (s *Server) generateDataKey(r *http.Request) (any, *apiError) {
	var in generateDataKeyInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	size := 0
	switch {
	case in.KeySpec == "AES_256" && in.NumberOfBytes == 0:
		size = 32
	case in.KeySpec == "AES_128" && in.NumberOfBytes == 0:
		size = 16
	case in.KeySpec == "" && in.NumberOfBytes > 0 && in.NumberOfBytes <= 1024:
		size = in.NumberOfBytes
	default:
		return nil, errorf("ValidationException", "give exactly one of KeySpec and NumberOfBytes")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.usable(in.KeyID)
	if err != nil {
		return nil, err
	}
	plaintext := make([]byte, size)
	_, _ = rand.Read(plaintext) // crypto/rand.Read never fails (Go 1.24+)
	return generateDataKeyOutput{
		CiphertextBlob: seal(k, plaintext, in.EncryptionContext),
		Plaintext:      plaintext,
		KeyID:          k.arn,
	}, nil
}

type decryptInput struct {
	CiphertextBlob      []byte            `json:"CiphertextBlob"`
	KeyID               string            `json:"KeyId"`
	EncryptionContext   map[string]string `json:"EncryptionContext"`
	EncryptionAlgorithm string            `json:"EncryptionAlgorithm"`
}

type decryptOutput struct {
	KeyID               string `json:"KeyId"`
	Plaintext           []byte `json:"Plaintext"`
	EncryptionAlgorithm string `json:"EncryptionAlgorithm"`
}

func (s *Server) decrypt(r *http.Request) (any, *apiError) {
	var in decryptInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, plaintext, err := s.open(in.CiphertextBlob, in.KeyID, in.EncryptionContext)
	if err != nil {
		return nil, err
	}
	return decryptOutput{KeyID: k.arn, Plaintext: plaintext, EncryptionAlgorithm: "SYMMETRIC_DEFAULT"}, nil
}

type reEncryptInput struct {
	CiphertextBlob               []byte            `json:"CiphertextBlob"`
	SourceKeyID                  string            `json:"SourceKeyId"`
	SourceEncryptionContext      map[string]string `json:"SourceEncryptionContext"`
	DestinationKeyID             string            `json:"DestinationKeyId"`
	DestinationEncryptionContext map[string]string `json:"DestinationEncryptionContext"`
}

type reEncryptOutput struct {
	CiphertextBlob                 []byte `json:"CiphertextBlob"`
	KeyID                          string `json:"KeyId"`
	SourceKeyID                    string `json:"SourceKeyId"`
	SourceEncryptionAlgorithm      string `json:"SourceEncryptionAlgorithm"`
	DestinationEncryptionAlgorithm string `json:"DestinationEncryptionAlgorithm"`
}

func (s *Server) reEncrypt(r *http.Request) (any, *apiError) {
	var in reEncryptInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	src, plaintext, err := s.open(in.CiphertextBlob, in.SourceKeyID, in.SourceEncryptionContext)
	if err != nil {
		return nil, err
	}
	defer clear(plaintext)
	dst, err := s.usable(in.DestinationKeyID)
	if err != nil {
		return nil, err
	}
	return reEncryptOutput{
		CiphertextBlob:                 seal(dst, plaintext, in.DestinationEncryptionContext),
		KeyID:                          dst.arn,
		SourceKeyID:                    src.arn,
		SourceEncryptionAlgorithm:      "SYMMETRIC_DEFAULT",
		DestinationEncryptionAlgorithm: "SYMMETRIC_DEFAULT",
	}, nil
}

type describeKeyInput struct {
	KeyID string `json:"KeyId"`
}

type keyMetadata struct {
	AWSAccountID      string   `json:"AWSAccountId"`
	KeyID             string   `json:"KeyId"`
	Arn               string   `json:"Arn"`
	CreationDate      float64  `json:"CreationDate"`
	Enabled           bool     `json:"Enabled"`
	KeyState          string   `json:"KeyState"`
	KeySpec           string   `json:"KeySpec"`
	KeyUsage          string   `json:"KeyUsage"`
	KeyManager        string   `json:"KeyManager"`
	Origin            string   `json:"Origin"`
	EncryptionAlgs    []string `json:"EncryptionAlgorithms,omitempty"`
	MultiRegion       bool     `json:"MultiRegion"`
	CustomerMasterKey string   `json:"CustomerMasterKeySpec"`
}

func (s *Server) describeKey(r *http.Request) (any, *apiError) {
	var in describeKeyInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.resolve(in.KeyID)
	if k == nil {
		return nil, errorf("NotFoundException", "key %s does not exist", in.KeyID)
	}
	md := keyMetadata{
		AWSAccountID:      AccountID,
		KeyID:             k.id,
		Arn:               k.arn,
		CreationDate:      float64(k.created.Unix()),
		Enabled:           k.state == StateEnabled,
		KeyState:          k.state,
		KeySpec:           k.spec,
		KeyUsage:          k.usage,
		KeyManager:        "CUSTOMER",
		Origin:            "AWS_KMS",
		CustomerMasterKey: k.spec,
	}
	if k.spec == "SYMMETRIC_DEFAULT" {
		md.EncryptionAlgs = []string{"SYMMETRIC_DEFAULT"}
	}
	return map[string]any{"KeyMetadata": md}, nil
}

// open decrypts a blob: keyRef, if given, must name the blob's key, and
// encCtx must be the context it was sealed with. The caller holds s.mu.
func (s *Server) open(blob []byte, keyRef string, encCtx map[string]string) (*key, []byte, *apiError) {
	h, ok := parseBlob(blob)
	if !ok {
		return nil, nil, errorf("InvalidCiphertextException", "the ciphertext is invalid")
	}
	k, ok := s.keys[h.keyID]
	if !ok {
		return nil, nil, errorf("InvalidCiphertextException", "the ciphertext is invalid")
	}
	if keyRef != "" {
		want := s.resolve(keyRef)
		if want == nil {
			return nil, nil, errorf("NotFoundException", "key %s does not exist", keyRef)
		}
		if want != k {
			return nil, nil, errorf("IncorrectKeyException", "the ciphertext was not encrypted under the KMS key given")
		}
	}
	if _, err := s.usable(k.id); err != nil {
		return nil, nil, err
	}
	if h.version < 1 || h.version > len(k.versions) {
		return nil, nil, errorf("InvalidCiphertextException", "the ciphertext is invalid")
	}
	plaintext, err := k.versions[h.version-1].Open(nil, h.nonce, h.sealed, additionalData(h.header, encCtx))
	if err != nil {
		return nil, nil, errorf("InvalidCiphertextException", "the ciphertext or its encryption context is invalid")
	}
	return k, plaintext, nil
}

// Blob layout: magic | len(keyID) | keyID | version (uint32, big endian) |
// nonce (12) | AES-GCM(plaintext) with the header and encryption context as
// additional data.
type blobHeader struct {
	header  []byte
	keyID   string
	version int
	nonce   []byte
	sealed  []byte
}

// seal encrypts plaintext under k's newest version; the caller holds s.mu.
func seal(k *key, plaintext []byte, encCtx map[string]string) []byte {
	version := len(k.versions)
	aead := k.versions[version-1]
	blob := []byte{blobMagic, byte(len(k.id))}
	blob = append(blob, k.id...)
	blob = binary.BigEndian.AppendUint32(blob, uint32(version))
	header := blob
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails (Go 1.24+)
	blob = append(blob, nonce...)
	return aead.Seal(blob, nonce, plaintext, additionalData(header, encCtx))
}

func parseBlob(blob []byte) (blobHeader, bool) {
	if len(blob) < 2 || blob[0] != blobMagic {
		return blobHeader{}, false
	}
	n := int(blob[1])
	rest := blob[2:]
	if len(rest) < n+4+12+16 {
		return blobHeader{}, false
	}
	h := blobHeader{keyID: string(rest[:n]), version: int(binary.BigEndian.Uint32(rest[n : n+4]))}
	h.header = blob[:2+n+4]
	h.nonce = rest[n+4 : n+4+12]
	h.sealed = rest[n+4+12:]
	return h, true
}

// additionalData binds a blob to its header and encryption context, in a
// canonical, unambiguous order.
func additionalData(header []byte, encCtx map[string]string) []byte {
	names := make([]string, 0, len(encCtx))
	for name := range encCtx {
		names = append(names, name)
	}
	sort.Strings(names)
	ad := append([]byte(nil), header...)
	for _, name := range names {
		ad = binary.BigEndian.AppendUint32(ad, uint32(len(name)))
		ad = append(ad, name...)
		ad = binary.BigEndian.AppendUint32(ad, uint32(len(encCtx[name])))
		ad = append(ad, encCtx[name]...)
	}
	return ad
}

func newAEAD() cipher.AEAD {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // crypto/rand.Read never fails (Go 1.24+)
	block, err := aes.NewCipher(k)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

func newKeyID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
