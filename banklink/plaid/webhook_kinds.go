package plaid

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/kluis-dev/kluis/banklink"
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

// loginErrorCodes are the ITEM/ERROR codes that only the user can fix in
// update mode: the item becomes login_required.
var loginErrorCodes = map[string]bool{
	"ITEM_LOGIN_REQUIRED": true, "INVALID_CREDENTIALS": true, "INVALID_MFA": true, "INVALID_SEND_METHOD": true,
	"INSUFFICIENT_CREDENTIALS": true, "ITEM_LOCKED": true, "USER_SETUP_REQUIRED": true, "MFA_NOT_SUPPORTED": true,
	"INVALID_UPDATED_USERNAME": true, "PASSWORD_RESET_REQUIRED": true,
}

// classifyWebhook names the kind of the ITEM and AUTH codes that kluis acts
// on beyond the original four, and reports whether it did (the rest stay
// with parseWebhook). docs/WEBHOOKS.md has the table of every code.
func classifyWebhook(ev *banklink.WebhookEvent, b webhookBody) bool {
	switch b.WebhookType + "/" + b.WebhookCode {
	case "ITEM/ERROR":
		code := safeCode(b.Error.ErrorCode)
		if loginErrorCodes[code] {
			ev.Kind = banklink.EventLoginRequired
		} else {
			// Recorded with its code; the item's state does not change (an
			// institution's outage passes by itself).
			ev.Kind = banklink.EventItemError
		}
		if code != "" {
			ev.ProviderCode = "ERROR:" + code
		}
	case "ITEM/LOGIN_REPAIRED":
		ev.Kind = banklink.EventLoginRepaired
	case "ITEM/WEBHOOK_UPDATE_ACKNOWLEDGED":
		ev.Kind = banklink.EventWebhookUpdated
	case "AUTH/AUTOMATICALLY_VERIFIED", "AUTH/VERIFICATION_EXPIRED":
		id := safeToken(b.AccountID)
		if id == "" {
			return true // an AUTH event naming no account: unknown, recorded
		}
		ev.Kind, ev.ProviderAccountID = banklink.EventAuthVerified, id
		if b.WebhookCode == "VERIFICATION_EXPIRED" {
			ev.Kind = banklink.EventAuthExpired
		}
	case "AUTH/PRODUCT_PERMISSIONS_REQUIRED":
		// The user withdrew Auth's permission: only update mode gives it back.
		ev.Kind = banklink.EventLoginRequired
	case "AUTH/SMS_MICRODEPOSITS_VERIFICATION":
		// The user confirmed (or failed to confirm) Same Day deposits
		// through Plaid's SMS flow rather than Link's update mode.
		id := safeToken(b.AccountID)
		switch {
		case id == "":
		case b.Status == "MANUALLY_VERIFIED":
			ev.Kind, ev.ProviderAccountID, ev.VerificationStatus = banklink.EventAuthVerified, id, "manually_verified"
		case b.Status == "VERIFICATION_FAILED":
			ev.Kind, ev.ProviderAccountID, ev.VerificationStatus = banklink.EventAuthFailed, id, "verification_failed"
		}
	case "AUTH/DEFAULT_UPDATE":
		// Deliberately ignored (recorded as unknown): see docs/WEBHOOKS.md.
		return true
	default:
		return false
	}
	return true
}
