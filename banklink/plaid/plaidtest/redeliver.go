package plaidtest

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// Redeliver is w delivered again as Plaid retries a delivery or an attacker
// replays one: the same body and the same claims (iat included), signed
// again with the current key, so that the signature bytes differ (ECDSA
// signatures are randomized). A receiver must take it as the same delivery.
func (s *Server) Redeliver(w Webhook) Webhook {
	s.t.Helper()
	parts := strings.Split(w.Header.Get(VerificationHeader), ".")
	if len(parts) != 3 {
		s.t.Fatalf("plaidtest: redeliver: not a signed webhook")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		s.t.Fatalf("plaidtest: redeliver: %v", err)
	}
	var claims jwt.MapClaims
	if err := json.Unmarshal(raw, &claims); err != nil {
		s.t.Fatalf("plaidtest: redeliver: %v", err)
	}
	s.mu.Lock()
	key := s.keys[s.currentKid]
	s.mu.Unlock()
	t := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	t.Header["kid"] = key.kid
	tok, err := t.SignedString(key.priv)
	if err != nil {
		s.t.Fatalf("plaidtest: redeliver: %v", err)
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(VerificationHeader, tok)
	if tok == w.Header.Get(VerificationHeader) {
		s.t.Fatalf("plaidtest: redeliver: the same signature twice")
	}
	return Webhook{Header: h, Body: append([]byte(nil), w.Body...)}
}
