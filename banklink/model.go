package banklink

import (
	"context"
	"net/http"
	"time"
)

// Link session states: created → succeeded (public token issued,
// kept only as a keyed hash) → exchanged; created or succeeded → expired at
// the deadline; exited when the user leaves Link.
const (
	SessionCreated   = "created"
	SessionSucceeded = "succeeded"
	SessionExchanged = "exchanged"
	SessionExpired   = "expired"
	SessionExited    = "exited"
)

// Link session modes: a new item, or update mode to repair an item's login.
const (
	ModeNew    = "new"
	ModeUpdate = "update"
)

// Deadlines of link sessions.
const (
	NewSessionTTL    = 4 * time.Hour
	UpdateSessionTTL = 30 * time.Minute
	PublicTokenTTL   = 30 * time.Minute
)

// Item states: active ⇄ login_required; active or login_required →
// relink_required (kluis lost the provider's token: a rotation whose answer
// never arrived; the user must link again) or revoked (the user withdrew
// consent at the provider); any → removed when the user unlinks.
const (
	ItemActive        = "active"
	ItemLoginRequired = "login_required"
	ItemRevoked       = "revoked"
	ItemRemoved       = "removed"

	ItemRelinkRequired = "relink_required"
)

// Account states: an account is active until the user withdraws consent to
// it at the provider (revoked: its number is destroyed, answering 410, and it
// is no longer verified).
const (
	AccountActive  = "active"
	AccountRevoked = "revoked"
)

// VerificationUnverified is every account's first verification status.
const VerificationUnverified = "unverified"

// Codes of errors the Service adds to the provider's.
const (
	// CodeLinkSessionClosed: the session is expired, exited, or already
	// exchanged with another public token.
	CodeLinkSessionClosed = "link_session_closed"
)

// LinkSession is a link session as the caller sees it. LinkToken is set
// only in the answer that created the session: it is never stored.
type LinkSession struct {
	ID     string
	Mode   string
	ItemID string
	// Provider is the bank provider the session links through.
	Provider  string
	Status    string
	LinkToken string
	ExpiresAt time.Time
	// SubjectID is the internal id of the session's subject (for the
	// hosted page's token).
	SubjectID string
	// PublicToken is set by LinkSession while the session has succeeded
	// and is not exchanged yet: the app that came back by redirect takes
	// it from GET /v1/link/sessions/{id}.
	PublicToken string
	// RedirectURI is where the hosted page sends the browser back in the
	// redirect flow ("" for none).
	RedirectURI string
}

// Item is one login at one institution, with its accounts. CredentialRef is
// the sealed access token's reference, for the internal API only.
type Item struct {
	ID              string
	SubjectID       string
	Provider        string
	ProviderItemID  string
	InstitutionID   string
	InstitutionName string
	Status          string
	CredentialRef   string
	CreatedAt       time.Time
	Accounts        []Account
	// legacyPendingRef is a rotated token sealed under a ref of its own by
	// a kluis from before stable refs (items.pending_credential_ref): live
	// at the provider, so removal revokes with it and rotation adopts it.
	legacyPendingRef string
	// CompletionPending: the item was exchanged but a read after it
	// (accounts, numbers) failed or was not ready; it is completed later.
	CompletionPending bool
	// webhookURL is the webhook URL the provider was last given for it.
	webhookURL string
}

// Account is a bank account: linked through an item, or (ItemID empty)
// entered by hand. AccountNumberRef is the sealed numbers' reference, for
// the internal API only. Verification sees accounts through its own view,
// verification.Account, which AccountStore (the verification.Accounts
// port) fills.
type Account struct {
	ID                 string
	SubjectID          string
	ItemID             string
	ProviderAccountID  string
	Name               string
	Mask               string
	Type               string
	Subtype            string
	VerificationStatus string
	AccountNumberRef   string
	CreatedAt          time.Time
	Status             string // AccountActive or AccountRevoked

	// ProviderVerificationStatus is the provider's verification_status
	// when the account was added (empty: none, instant auth).
	ProviderVerificationStatus string
}

// SandboxLink is what a user types into the sandbox's Link UI.
type SandboxLink struct {
	InstitutionID string
	Username      string
	Password      string
	// AccessToken is set in update mode: the item whose login is repaired.
	AccessToken string
	// Code, in update mode for an item whose provider verifies its account
	// by Same Day micro-deposits, is the code the user read off the
	// deposit (the sandbox's is sandbox.MicroDepositCode).
	Code string
}

// SandboxLinker is implemented by the sandbox provider only: it plays the
// user finishing Link, which a real provider's own UI does. Its errors are
// Provider errors (CodeInvalidCredentials for a bad login,
// CodeInstitutionDown, CodeProductNotSupported).
type SandboxLinker interface {
	CompleteLink(ctx context.Context, req SandboxLink) (publicToken string, err error)
	// SignedWebhook builds a webhook about an item in Plaid's shape, signed
	// as the sandbox signs them, and changes the sandbox's own state to
	// match (a login that is now required or repaired, an access that is
	// revoked, a new account, a micro-deposit verified or expired). A code
	// that is not an upper-case name is EInvalid.
	SignedWebhook(ctx context.Context, w SandboxWebhook) (http.Header, []byte, error)
}

// SandboxWebhook is a webhook the sandbox is asked to fire, in Plaid's
// terms (docs/WEBHOOKS.md lists the codes it plays).
type SandboxWebhook struct {
	ProviderItemID string
	// Type is the webhook_type; "" is the code's own (AUTH for the codes
	// only AUTH has, ITEM otherwise).
	Type string
	// Code is the webhook_code (ERROR, LOGIN_REPAIRED, NEW_ACCOUNTS_AVAILABLE,
	// AUTOMATICALLY_VERIFIED, …).
	Code string
	// ErrorCode is an ERROR's error.error_code; "" is ITEM_LOGIN_REQUIRED.
	ErrorCode string
	// ProviderAccountID names the account of a USER_ACCOUNT_REVOKED.
	ProviderAccountID string
	// Status is an SMS_MICRODEPOSITS_VERIFICATION's outcome, as Plaid
	// names it: MANUALLY_VERIFIED ("") or VERIFICATION_FAILED.
	Status string
	// WebhookURL is the URL a WEBHOOK_UPDATE_ACKNOWLEDGED names as the
	// item's new one (new_webhook_url): kluis's configured webhook URL.
	WebhookURL string
}
