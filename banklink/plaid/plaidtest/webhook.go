package plaidtest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// VerificationHeader is the header Plaid signs webhooks in.
const VerificationHeader = "Plaid-Verification"

// signingKey is one webhook verification key.
type signingKey struct {
	kid       string
	priv      *ecdsa.PrivateKey
	createdAt int64
	expiredAt *int64
}

// jwk is the key as /webhook_verification_key/get gives it.
func (k *signingKey) jwk() map[string]any {
	pub, err := k.priv.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		panic(err)
	}
	var expired any
	if k.expiredAt != nil {
		expired = *k.expiredAt
	}
	return map[string]any{
		"alg":        "ES256",
		"crv":        "P-256",
		"kid":        k.kid,
		"kty":        "EC",
		"use":        "sig",
		"x":          base64.RawURLEncoding.EncodeToString(pub[1:33]),
		"y":          base64.RawURLEncoding.EncodeToString(pub[33:65]),
		"created_at": k.createdAt,
		"expired_at": expired,
	}
}

// RotateKey makes a new signing key current and returns its kid. Older keys
// stay published (and valid) until ExpireKey.
func (s *Server) RotateKey() string {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		s.t.Fatalf("plaidtest: generate webhook key: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := &signingKey{kid: uuid(), priv: priv, createdAt: s.clock.Now().Unix()}
	s.keys[k.kid] = k
	s.currentKid = k.kid
	return k.kid
}

// CurrentKid is the kid webhooks are signed under.
func (s *Server) CurrentKid() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.currentKid
}

// ExpireKey sets a key's expired_at to now, as Plaid does when it retires a
// key; it is still served by /webhook_verification_key/get.
func (s *Server) ExpireKey(kid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[kid]; ok {
		now := s.clock.Now().Unix()
		k.expiredAt = &now
	}
}

// Webhook is a webhook as Plaid would POST it: its headers (with
// Plaid-Verification) and raw body.
type Webhook struct {
	Header http.Header
	Body   []byte
}

// Request builds the POST of w to url.
func (w Webhook) Request(ctx context.Context, url string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(w.Body))
	if err != nil {
		return nil, err
	}
	req.Header = w.Header.Clone()
	return req, nil
}

// FireWebhook builds a webhook body for an item (webhook_type,
// webhook_code, item_id, environment, and the extra fields) and signs it
// validly with the current key.
func (s *Server) FireWebhook(itemID, webhookType, webhookCode string, extra map[string]any) Webhook {
	s.t.Helper()
	fields := map[string]any{
		"webhook_type": webhookType,
		"webhook_code": webhookCode,
		"item_id":      itemID,
		"environment":  "sandbox",
	}
	for k, v := range extra {
		fields[k] = v
	}
	body, err := json.Marshal(fields)
	if err != nil {
		s.t.Fatalf("plaidtest: encode webhook: %v", err)
	}
	return s.Sign(body, Valid)
}

// LoginRequiredWebhook is ITEM/ERROR with ITEM_LOGIN_REQUIRED for an item.
func (s *Server) LoginRequiredWebhook(itemID string) Webhook {
	s.t.Helper()
	return s.FireWebhook(itemID, "ITEM", "ERROR", map[string]any{"error": map[string]any{
		"error_type":      "ITEM_ERROR",
		"error_code":      "ITEM_LOGIN_REQUIRED",
		"error_message":   "the login details of this item have changed",
		"display_message": nil,
	}})
}

// Forgery names a way a Plaid-Verification JWT can be wrong.
type Forgery int

// Forgeries for Sign. Valid signs correctly.
const (
	Valid Forgery = iota
	// HS256 is an HMAC token keyed with the public key's bytes: the
	// algorithm-confusion attack.
	HS256
	// AlgNone is an unsigned token (alg "none").
	AlgNone
	// RS256 is signed with an RSA key under the current kid.
	RS256
	// StaleIat was issued six minutes ago.
	StaleIat
	// FutureIat is issued five minutes from now.
	FutureIat
	// BodyMismatch carries the hash of another body.
	BodyMismatch
	// UnknownKid names a kid the server never published.
	UnknownKid
	// WrongKey is ES256 under the current kid, signed by another key.
	WrongKey
	// NoIat has no iat claim.
	NoIat
	// ExpiredKey is signed by a key that is published with expired_at set
	// (the server makes that key on first use).
	ExpiredKey
)

func (f Forgery) String() string {
	names := []string{"Valid", "HS256", "AlgNone", "RS256", "StaleIat", "FutureIat", "BodyMismatch", "UnknownKid", "WrongKey", "NoIat", "ExpiredKey"}
	if int(f) < len(names) {
		return names[f]
	}
	return fmt.Sprintf("Forgery(%d)", int(f))
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// Sign returns body with a Plaid-Verification header made as forgery says.
func (s *Server) Sign(body []byte, forgery Forgery) Webhook {
	s.t.Helper()
	tok, err := s.token(body, forgery)
	if err != nil {
		s.t.Fatalf("plaidtest: sign webhook (%v): %v", forgery, err)
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(VerificationHeader, tok)
	return Webhook{Header: h, Body: append([]byte(nil), body...)}
}

func (s *Server) token(body []byte, forgery Forgery) (string, error) {
	s.mu.Lock()
	now := s.clock.Now()
	key := s.keys[s.currentKid]
	s.mu.Unlock()
	sum := sha256.Sum256(body)
	claims := jwt.MapClaims{"iat": now.Unix(), "request_body_sha256": hex.EncodeToString(sum[:])}
	kid := key.kid
	method := jwt.SigningMethod(jwt.SigningMethodES256)
	var signKey any = key.priv
	switch forgery {
	case Valid:
	case HS256:
		method = jwt.SigningMethodHS256
		pub, err := key.priv.PublicKey.Bytes()
		if err != nil {
			return "", err
		}
		signKey = pub
	case AlgNone:
		method, signKey = jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType
	case RS256:
		rsaOnce.Do(func() { rsaKey, _ = rsa.GenerateKey(rand.Reader, 2048) })
		method, signKey = jwt.SigningMethodRS256, rsaKey
	case StaleIat:
		claims["iat"] = now.Add(-6 * time.Minute).Unix()
	case FutureIat:
		claims["iat"] = now.Add(5 * time.Minute).Unix()
	case BodyMismatch:
		other := sha256.Sum256(append(append([]byte(nil), body...), ' '))
		claims["request_body_sha256"] = hex.EncodeToString(other[:])
	case UnknownKid:
		kid = "unknown-" + uuid()
	case WrongKey:
		other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", err
		}
		signKey = other
	case NoIat:
		delete(claims, "iat")
	case ExpiredKey:
		k := s.expiredKey()
		kid, signKey = k.kid, k.priv
	default:
		return "", fmt.Errorf("unknown forgery %d", forgery)
	}
	t := jwt.NewWithClaims(method, claims)
	t.Header["kid"] = kid
	return t.SignedString(signKey)
}

// expiredKey returns a published key with expired_at set, making it once.
func (s *Server) expiredKey() *signingKey {
	s.mu.Lock()
	for _, k := range s.keys {
		if k.expiredAt != nil {
			s.mu.Unlock()
			return k
		}
	}
	s.mu.Unlock()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		s.t.Fatalf("plaidtest: generate webhook key: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	created, expired := now.Add(-48*time.Hour).Unix(), now.Add(-time.Hour).Unix()
	k := &signingKey{kid: uuid(), priv: priv, createdAt: created, expiredAt: &expired}
	s.keys[k.kid] = k
	return k
}
