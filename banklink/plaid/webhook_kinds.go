package plaid

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
)

// deliveryID names one webhook delivery for deduplication: the SHA-256 of
// the verified token's iat and request_body_sha256. Plaid's ITEM and AUTH
// webhooks carry no event id of their own, and a body alone is no identity:
// a second ITEM_LOGIN_REQUIRED after the user repaired the item has the
// same bytes and is a new event (a later iat). A replay of one delivery,
// even with a re-encoded (malleable ECDSA) signature, has the same claims
// and is a duplicate. Everything past deduplication is an idempotent
// state transition, so a delivery Plaid signs anew carries no risk either.
// token has been verified by the caller.
func deliveryID(token, bodyHash string) string {
	iat := ""
	if parts := strings.Split(token, "."); len(parts) == 3 {
		if raw, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
			var c struct {
				Iat json.Number `json:"iat"`
			}
			if json.Unmarshal(raw, &c) == nil {
				if n, err := c.Iat.Int64(); err == nil {
					iat = strconv.FormatInt(n, 10)
				}
			}
		}
	}
	sum := sha256.Sum256([]byte("kluis/plaid/webhook-delivery\x00" + iat + "\x00" + bodyHash))
	return hex.EncodeToString(sum[:])
}
