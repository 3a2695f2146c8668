// Package banklink links end users' bank accounts through an aggregator:
// link sessions, items (one login at one institution) and their accounts,
// provider webhooks, and access-token rotation. Providers (Plaid, the
// sandbox) implement Provider, each in its own package.
package banklink

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidlink"
)

// Provider is a bank-data aggregator. Access tokens and public tokens are
// secrets: implementations never put them in errors, logs or URLs. Every
// implementation passes the contract suite in banklink/banklinktest.
//
// Errors are kluis errors (wrapped) with these codes: CodeItemLoginRequired,
// CodeRateLimited (with retry_after_seconds where the provider says),
// CodeInstitutionDown, CodeInvalidToken, CodeInvalidCredentials,
// CodeProductNotSupported, CodeProductNotReady, CodeAccessNotGranted,
// CodeNoAccounts, CodeProviderError (the provider refused kluis's request or
// answered what kluis cannot read), kluis.EUnavailable when the provider
// cannot be reached or fails, and kluis.EInternal only for kluis's own bugs.
type Provider interface {
	// Name is the provider's name ("sandbox", "plaid"): its key in the
	// registry (Providers), what every item and link session records, and
	// the {provider} of its webhook route. It never changes.
	Name() string
	// CreateLinkToken starts a link flow (new, or update mode when
	// AccessToken is set) and returns the token the app's Link UI opens.
	CreateLinkToken(ctx context.Context, req LinkTokenRequest) (LinkToken, error)
	// ExchangePublicToken trades the public token the Link UI returned for
	// a long-lived access token.
	ExchangePublicToken(ctx context.Context, publicToken string) (Exchange, error)
	// GetAccounts returns the item's institution and accounts.
	GetAccounts(ctx context.Context, accessToken string) (ItemAccounts, error)
	// GetAuth returns account and routing numbers (instant auth), or
	// CodeProductNotSupported where the institution cannot give them.
	GetAuth(ctx context.Context, accessToken string) ([]AuthNumbers, error)
	// RemoveItem revokes kluis's access to the item at the provider.
	RemoveItem(ctx context.Context, accessToken string) error
	// RotateAccessToken invalidates accessToken and returns its successor.
	// The old token stops working at once, and the successor exists only in
	// the answer: an answer lost on the way leaves kluis without a live
	// token (the item becomes relink_required). A token the provider no
	// longer knows is CodeInvalidToken.
	RotateAccessToken(ctx context.Context, accessToken string) (string, error)
	// VerifyWebhook checks a webhook's signature over its raw body and
	// parses it. A bad or missing signature is CodeBadSignature; a
	// signature that cannot be checked yet (its key is not known and may not
	// be fetched now) is CodeWebhookKeyUnavailable.
	VerifyWebhook(ctx context.Context, header http.Header, body []byte) (WebhookEvent, error)
}

// LinkTokenRequest asks for a link token.
type LinkTokenRequest struct {
	// ClientUserID identifies the user to the provider: a pseudonym, never
	// the user's own id or anything personal.
	ClientUserID string
	Products     []string
	// AccessToken is set for update mode (repairing an item's login).
	AccessToken string
	// WebhookURL is where the provider sends item events, if any.
	WebhookURL string
	// AccountSubtypes limits the depository accounts Link offers (empty:
	// the provider's default); AccountSelection lets the user choose
	// accounts again in update mode; Platform is where Link runs
	// (PlatformWeb, PlatformIOS, PlatformAndroid), which decides how an
	// OAuth institution returns to the app. Providers without these
	// ignore them.
	AccountSubtypes  []string
	AccountSelection bool
	Platform         string
	// Link are the Link settings of the user's app; empty fields keep the
	// provider's own. Providers without Link settings ignore them.
	Link plaidlink.Settings
	// State is the OAuth state an OAuthProvider's authorize URL carries:
	// banklink binds it to the link session (Service.oauthState), and the
	// provider derives its PKCE verifier from it. Others ignore it.
	State string
}

// Platforms a link session may name.
const (
	PlatformWeb     = "web"
	PlatformIOS     = "ios"
	PlatformAndroid = "android"
)

// LinkToken is what the app's Link UI opens.
type LinkToken struct {
	Token     string
	ExpiresAt time.Time
}

// Exchange is the result of exchanging a public token.
type Exchange struct {
	AccessToken    string
	ProviderItemID string
}

// Institution is a bank as the provider names it.
type Institution struct {
	ID   string
	Name string
}

// ProviderAccount is one account of an item, with no full number.
type ProviderAccount struct {
	ProviderAccountID string
	Name              string
	Mask              string // last 4 digits
	Type              string // depository, credit, ...
	Subtype           string // checking, savings, ...
	// VerificationStatus is the provider's own word on how the account's
	// numbers were verified (Plaid's verification_status); empty where it
	// gave none (numbers from the user's login: instant auth).
	VerificationStatus string
}

// ItemAccounts is an item's institution and accounts.
type ItemAccounts struct {
	ProviderItemID string
	Institution    Institution
	Accounts       []ProviderAccount
}

// AuthNumbers are one account's full numbers (secrets).
type AuthNumbers struct {
	ProviderAccountID string
	AccountNumber     string
	RoutingNumber     string
	// Tokenized: the number is a token for this app only (Plaid's
	// is_tokenized_account_number), good for ACH from the app that linked
	// it and for nothing else.
	Tokenized bool
	// BranchCode and BankID are a South African account's (Stitch), which
	// has no routing number; BankID is kluis's bank id (package za).
	BranchCode string
	BankID     string
}

// Webhook event kinds kluis acts on; anything else is KindUnknown (recorded,
// ignored).
const (
	EventLoginRequired = "login_required"
	EventRevoked       = "revoked"
	EventNewAccounts   = "new_accounts"
	EventUnknown       = "unknown"

	// EventAccountRevoked: the user withdrew consent to one account of the
	// item (WebhookEvent.ProviderAccountID names it).
	EventAccountRevoked = "account_revoked"

	// EventLoginRepaired: the user repaired the login outside kluis's
	// update mode (login_required → active).
	EventLoginRepaired = "login_repaired"
	// EventItemError: an item error that is not the user's to fix
	// (recorded; the item's state does not change).
	EventItemError = "item_error"
	// EventWebhookUpdated: the provider acknowledged a new webhook URL.
	EventWebhookUpdated = "webhook_updated"
	// EventAuthVerified and EventAuthExpired: the provider verified one
	// account by micro-deposits, or gave up on it (ProviderAccountID).
	EventAuthVerified = "auth_verified"
	EventAuthExpired  = "auth_expired"
	// EventAuthFailed: the user used up the attempts at confirming the
	// provider's micro-deposits (Plaid's SMS_MICRODEPOSITS_VERIFICATION
	// with VERIFICATION_FAILED).
	EventAuthFailed = "auth_failed"
)

// WebhookEvent is a verified provider webhook.
type WebhookEvent struct {
	// ID identifies the delivery for deduplication (Plaid: a hash of its
	// signed claims; the sandbox: its signed delivery id), never the body
	// alone: the same body delivered again later is a new event.
	ID             string
	Kind           string
	ProviderType   string // the provider's own type and code, for the record
	ProviderCode   string
	ProviderItemID string
	// ProviderAccountID names the account of an EventAccountRevoked or of
	// an auth event.
	ProviderAccountID string
	// VerificationStatus, on an auth event, is the account's
	// verification_status it reports (automatically_verified,
	// manually_verified, verification_expired, verification_failed); empty:
	// the one its kind implies.
	VerificationStatus string
}

// Error codes of provider errors (kluis.Error codes; api maps them).
const (
	CodeItemLoginRequired   = "item_login_required"
	CodeRateLimited         = kluis.ERateLimited
	CodeInstitutionDown     = "institution_down"
	CodeInvalidToken        = "invalid_token"
	CodeInvalidCredentials  = "invalid_credentials" // #nosec G101 -- an error code, not a credential
	CodeProductNotSupported = "product_not_supported"
	CodeBadSignature        = "bad_signature"
	// CodeWebhookKeyUnavailable: the webhook names a signing key kluis does
	// not hold and may not fetch now (the fetch budget is spent). Not a
	// verdict on the signature: the provider retries, and the key is
	// fetched then. Deliberately not kluis.EUnavailable, so that forged
	// webhooks cannot trip the provider's circuit breaker.
	CodeWebhookKeyUnavailable = "webhook_key_unavailable"
)

// More provider error codes (issue 14; docs/PLAID.md).
const (
	// CodeProductNotReady: the provider is still gathering the data (Plaid's
	// PRODUCT_NOT_READY); the item is fine and is completed later.
	CodeProductNotReady = "product_not_ready"
	// CodeAccessNotGranted and CodeNoAccounts: the user did not share the
	// accounts or data kluis needs (Plaid's ACCESS_NOT_GRANTED,
	// NO_ACCOUNTS); update mode with account selection fixes it.
	CodeAccessNotGranted = "access_not_granted"
	CodeNoAccounts       = "no_accounts"
	// CodeProviderError: the provider refused kluis's own request (bad
	// keys, a field it does not accept) or answered what kluis cannot
	// read. An operator must look; the caller gets a 503, never a 500.
	CodeProviderError = "provider_error"
)

// webhookItemCheckKey carries a WebhookItemCheck in a context.
type webhookItemCheckKey struct{}

// WebhookItemCheck reports whether kluis holds a live item with this
// provider's item id. A provider may ask it before it spends a scarce key
// fetch on an unverified webhook: forged webhooks that cannot name a real
// item must not use up what genuine ones need.
type WebhookItemCheck func(ctx context.Context, providerItemID string) bool

// WithWebhookItemCheck returns ctx carrying check, for VerifyWebhook.
func WithWebhookItemCheck(ctx context.Context, check WebhookItemCheck) context.Context {
	return context.WithValue(ctx, webhookItemCheckKey{}, check)
}

// WebhookItemKnown asks the WebhookItemCheck in ctx; false when there is
// none or the id is empty.
func WebhookItemKnown(ctx context.Context, providerItemID string) bool {
	check, _ := ctx.Value(webhookItemCheckKey{}).(WebhookItemCheck)
	return check != nil && providerItemID != "" && check(ctx, providerItemID)
}

// ErrProvider is wrapped by every error a provider returns, for errors.Is.
var ErrProvider = errors.New("bank provider error")

// EventBankAccountVerification: the provider finished a bank account
// verification it had answered pending (WebhookEvent.ProviderCode names
// the provider's verification id); verification completes it.
const EventBankAccountVerification = "bank_account_verification"
