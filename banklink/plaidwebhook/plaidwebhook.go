// Package plaidwebhook is the one reading of Plaid-shaped webhook bodies
// (webhook_type, webhook_code, item_id, error, …, as Plaid's OpenAPI
// describes them), shared by every provider that sends them: Plaid itself
// and the sandbox, whose webhooks are Plaid's shapes so that one decoding
// and one handling path serve both. Only the signature check differs per
// provider (Plaid's ES256 JWT, the sandbox's HMAC), and it runs before
// Decode: Decode reads bodies that are verified already.
//
// docs/WEBHOOKS.md has the table of every ITEM and AUTH code and what kluis
// does with it; this package is its code.
package plaidwebhook

import (
	"encoding/json"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
)

// Webhook types kluis reads.
const (
	TypeItem = "ITEM"
	TypeAuth = "AUTH"
)

// Webhook codes kluis acts on (Plaid's names).
const (
	CodeError                        = "ERROR"
	CodeLoginRepaired                = "LOGIN_REPAIRED"
	CodePendingExpiration            = "PENDING_EXPIRATION"
	CodePendingDisconnect            = "PENDING_DISCONNECT"
	CodeUserPermissionRevoked        = "USER_PERMISSION_REVOKED"
	CodeUserAccountRevoked           = "USER_ACCOUNT_REVOKED"
	CodeNewAccountsAvailable         = "NEW_ACCOUNTS_AVAILABLE"
	CodeWebhookUpdateAcknowledged    = "WEBHOOK_UPDATE_ACKNOWLEDGED"
	CodeAutomaticallyVerified        = "AUTOMATICALLY_VERIFIED"
	CodeVerificationExpired          = "VERIFICATION_EXPIRED"
	CodeProductPermissionsRequired   = "PRODUCT_PERMISSIONS_REQUIRED"
	CodeSMSMicrodepositsVerification = "SMS_MICRODEPOSITS_VERIFICATION"
	CodeDefaultUpdate                = "DEFAULT_UPDATE"

	// ErrorItemLoginRequired is the error_code of ITEM/ERROR that asks for
	// the user's login again.
	ErrorItemLoginRequired = "ITEM_LOGIN_REQUIRED"
)

// authOnly are the codes that exist only as AUTH webhooks in Plaid's
// description (DEFAULT_UPDATE is also TRANSACTIONS', HOLDINGS', …).
var authOnly = map[string]bool{
	CodeAutomaticallyVerified: true, CodeVerificationExpired: true,
	CodeProductPermissionsRequired: true, CodeSMSMicrodepositsVerification: true,
}

// TypeOf is the webhook_type a code is sent with when none is named: AUTH
// for the codes only AUTH has, ITEM for the rest.
func TypeOf(code string) string {
	if authOnly[code] {
		return TypeAuth
	}
	return TypeItem
}

// loginErrorCodes are the ITEM/ERROR codes that only the user can fix in
// update mode: the item becomes login_required.
var loginErrorCodes = map[string]bool{
	ErrorItemLoginRequired: true, "INVALID_CREDENTIALS": true, "INVALID_MFA": true, "INVALID_SEND_METHOD": true,
	"INSUFFICIENT_CREDENTIALS": true, "ITEM_LOCKED": true, "USER_SETUP_REQUIRED": true, "MFA_NOT_SUPPORTED": true,
	"INVALID_UPDATED_USERNAME": true, "PASSWORD_RESET_REQUIRED": true,
}

// IsLoginError reports whether an ITEM/ERROR of this error_code makes the
// item login_required.
func IsLoginError(errorCode string) bool { return loginErrorCodes[errorCode] }

// Body is a Plaid-shaped webhook: the fields of Plaid's ITEM and AUTH
// webhook schemas that kluis reads or a sender fills in. Empty optional
// fields are left out, as Plaid leaves them out.
type Body struct {
	WebhookType string `json:"webhook_type"`
	WebhookCode string `json:"webhook_code"`
	ItemID      string `json:"item_id"`
	AccountID   string `json:"account_id,omitempty"`
	// Error is a PlaidError object on ITEM webhooks (null when there is
	// none, and left out); some AUTH webhooks (FallbackAuthMicrodeposit*) send a bare
	// string or null instead, which decodes as no error.
	Error *Error `json:"error,omitempty"`
	// Status is SMS_MICRODEPOSITS_VERIFICATION's outcome
	// (MANUALLY_VERIFIED or VERIFICATION_FAILED).
	Status string `json:"status,omitempty"`
	// ConsentExpirationTime is PENDING_EXPIRATION's, DisconnectTime and
	// Reason PENDING_DISCONNECT's, NewWebhookURL
	// WEBHOOK_UPDATE_ACKNOWLEDGED's.
	ConsentExpirationTime string `json:"consent_expiration_time,omitempty"`
	DisconnectTime        string `json:"disconnect_time,omitempty"`
	Reason                string `json:"reason,omitempty"`
	NewWebhookURL         string `json:"new_webhook_url,omitempty"`
	// Environment is Plaid's environment the webhook came from (sandbox,
	// production).
	Environment string `json:"environment"`
}

// Error is Plaid's PlaidError object, with its required fields.
type Error struct {
	ErrorType      string  `json:"error_type"`
	ErrorCode      string  `json:"error_code"`
	ErrorMessage   string  `json:"error_message"`
	DisplayMessage *string `json:"display_message"`
	Status         int     `json:"status,omitempty"`
}

// UnmarshalJSON takes a PlaidError object and ignores any other shape (a
// bare string, a number), so that an AUTH webhook's string error cannot
// make a signed webhook unreadable.
func (e *Error) UnmarshalJSON(b []byte) error {
	type plain Error
	var obj plain
	if json.Unmarshal(b, &obj) == nil {
		*e = Error(obj)
	}
	return nil
}

// errorCode is the body's error_code, "" when it has none.
func (b Body) errorCode() string {
	if b.Error == nil {
		return ""
	}
	return b.Error.ErrorCode
}

// Decode reads a verified Plaid-shaped body and names its event kind (the
// event's ID is the provider's: it names the delivery). A body that is not
// JSON is EInvalid (the sender's mistake, a 400); a code kluis does not act
// on is EventUnknown, recorded and ignored.
func Decode(body []byte) (banklink.WebhookEvent, error) {
	var b Body
	if err := json.Unmarshal(body, &b); err != nil {
		return banklink.WebhookEvent{}, kluis.Wrap(kluis.EInvalid, "webhook: signed body is not a Plaid-shaped webhook", banklink.ErrProvider)
	}
	ev := banklink.WebhookEvent{
		Kind:           banklink.EventUnknown,
		ProviderType:   SafeToken(b.WebhookType),
		ProviderCode:   SafeToken(b.WebhookCode),
		ProviderItemID: SafeToken(b.ItemID),
	}
	classify(&ev, b)
	return ev, nil
}

// classify names the kind of every ITEM and AUTH code kluis acts on; any
// other stays EventUnknown.
func classify(ev *banklink.WebhookEvent, b Body) {
	switch b.WebhookType + "/" + b.WebhookCode {
	case TypeItem + "/" + CodeError:
		code := SafeCode(b.errorCode())
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
	case TypeItem + "/" + CodeLoginRepaired:
		ev.Kind = banklink.EventLoginRepaired
	case TypeItem + "/" + CodePendingExpiration, TypeItem + "/" + CodePendingDisconnect:
		// Each asks for the user to go through update mode before access
		// lapses; acting early costs only a prompt.
		ev.Kind = banklink.EventLoginRequired
	case TypeItem + "/" + CodeUserPermissionRevoked:
		ev.Kind = banklink.EventRevoked
	case TypeItem + "/" + CodeUserAccountRevoked:
		if id := SafeToken(b.AccountID); id != "" {
			ev.Kind, ev.ProviderAccountID = banklink.EventAccountRevoked, id
		}
	case TypeItem + "/" + CodeNewAccountsAvailable:
		ev.Kind = banklink.EventNewAccounts
	case TypeItem + "/" + CodeWebhookUpdateAcknowledged:
		ev.Kind = banklink.EventWebhookUpdated
	case TypeAuth + "/" + CodeAutomaticallyVerified, TypeAuth + "/" + CodeVerificationExpired:
		id := SafeToken(b.AccountID)
		if id == "" {
			return // an AUTH event naming no account: unknown, recorded
		}
		ev.Kind, ev.ProviderAccountID = banklink.EventAuthVerified, id
		if b.WebhookCode == CodeVerificationExpired {
			ev.Kind = banklink.EventAuthExpired
		}
	case TypeAuth + "/" + CodeProductPermissionsRequired:
		// The user withdrew Auth's permission: only update mode gives it back.
		ev.Kind = banklink.EventLoginRequired
	case TypeAuth + "/" + CodeSMSMicrodepositsVerification:
		// The user confirmed (or failed to confirm) Same Day deposits
		// through Plaid's SMS flow rather than Link's update mode.
		id := SafeToken(b.AccountID)
		switch {
		case id == "":
		case b.Status == "MANUALLY_VERIFIED":
			ev.Kind, ev.ProviderAccountID, ev.VerificationStatus = banklink.EventAuthVerified, id, "manually_verified"
		case b.Status == "VERIFICATION_FAILED":
			ev.Kind, ev.ProviderAccountID, ev.VerificationStatus = banklink.EventAuthFailed, id, "verification_failed"
		}
	case TypeAuth + "/" + CodeDefaultUpdate:
		// Deliberately ignored (recorded as unknown): see docs/WEBHOOKS.md.
	}
}

// SafeToken passes identifiers such as webhook codes and item ids, and
// drops anything else, so that a strange body cannot smuggle text into what
// kluis records.
func SafeToken(s string) string {
	if len(s) == 0 || len(s) > 64 {
		return ""
	}
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return ""
		}
	}
	return s
}

// SafeCode passes Plaid's error types and codes, which are upper-case
// words joined by underscores, and drops anything else (digits too: an
// account number echoed back must not pass).
func SafeCode(s string) string {
	if len(s) > 64 {
		return ""
	}
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c == '_') {
			return ""
		}
	}
	return s
}
