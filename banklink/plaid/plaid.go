// Package plaid is the Plaid bank-data provider: link tokens, public-token
// exchange, accounts, instant auth numbers, item removal, access-token
// rotation and signed webhooks, over Plaid's REST API (version 2020-09-14).
//
// Every call is a POST with a JSON body; the client id and secret travel in
// the PLAID-CLIENT-ID and PLAID-SECRET headers, never in the body or a URL.
// Access tokens, public tokens and account numbers are secrets: they never
// appear in an error this package returns. Errors carry at most Plaid's
// error_code and request_id, never its error_message, which can echo input.
//
// Retries are bounded and only where a retry cannot do anything twice: a
// connection that failed before the request was written, a 429 or
// RATE_LIMIT_EXCEEDED answer (Plaid refused to act), and 5xx answers or
// timeouts on idempotent calls (link token creation and the reads). Public
// token exchange, item removal and token rotation are never retried once the
// request may have reached Plaid.
package plaid

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidlink"
	"github.com/kluis-dev/kluis/banklink/plaidwebhook"
)

// APIVersion is the Plaid API version every request names in the
// Plaid-Version header; the request and response shapes here are that
// version's.
const APIVersion = "2020-09-14"

// Defaults for the zero values of Options.
const (
	DefaultTimeout                 = 10 * time.Second
	DefaultMaxRetries              = 2
	DefaultRetryBaseDelay          = 200 * time.Millisecond
	DefaultRetryMaxDelay           = 2 * time.Second
	DefaultWebhookKeyCacheTTL      = 24 * time.Hour
	DefaultWebhookKeyCacheSize     = 16
	DefaultWebhookKeyFetchInterval = 10 * time.Second
	DefaultClientName              = "kluis"
	DefaultLanguage                = "en"
)

// MaxResponseBytes caps how much of an answer is read: Plaid's answers for
// the calls made here are a few kilobytes.
const MaxResponseBytes = 1 << 20

// Options configures a Provider. ClientID, Secret and BaseURL are required.
type Options struct {
	// ClientID and Secret are the Plaid API keys of the environment
	// BaseURL points at.
	ClientID string
	Secret   string
	// BaseURL is Plaid's environment, e.g. https://production.plaid.com or
	// https://sandbox.plaid.com. It must be https, except on a loopback
	// address (tests).
	BaseURL string
	// HTTPClient sends the requests (default: a fresh client). Its redirects
	// are never followed, so the secret headers cannot be sent elsewhere.
	HTTPClient *http.Client
	// Timeout bounds each attempt (default 10s). The caller's context bounds
	// the whole call, retries included.
	Timeout time.Duration
	// MaxRetries is how many times a call may be retried after its first
	// attempt where retrying is safe: 0 means DefaultMaxRetries, a negative
	// number means never.
	MaxRetries int
	// RetryBaseDelay and RetryMaxDelay shape the exponential backoff, with
	// jitter, between attempts (defaults 200ms and 2s).
	RetryBaseDelay time.Duration
	RetryMaxDelay  time.Duration
	// Clock tells the time for webhook freshness and the key cache
	// (default kluis.SystemClock).
	Clock kluis.Clock
	// WebhookKeyCacheTTL is how long a webhook verification key is used
	// before it is fetched again, to notice its expiry (default 24h).
	WebhookKeyCacheTTL time.Duration
	// WebhookKeyCacheSize bounds the cached keys (default 16); Plaid has
	// only a few live keys at a time.
	WebhookKeyCacheSize int
	// WebhookKeyFetchInterval is the steady rate at which keys not in the
	// cache may be fetched (default one per 10s, with a burst of 3), so
	// forged webhooks naming random kids cannot drive calls to Plaid. A
	// second lane at the same rate serves only webhooks that name an item
	// kluis holds, so a flood of forgeries cannot starve genuine ones.
	WebhookKeyFetchInterval time.Duration
	// ClientName, Language and CountryCodes go into every link token
	// (defaults "kluis", "en", ["US"]).
	ClientName   string
	Language     string
	CountryCodes []string
	// RedirectURI is where Link returns after an OAuth institution (web and
	// iOS); AndroidPackageName names the Android app, which Plaid sends
	// back to instead (a session for Android sends it and no redirect
	// URI). Both are registered in Plaid's dashboard. Empty: not sent.
	RedirectURI        string
	AndroidPackageName string
	// Products are the link token's products when the request names none
	// (default ["auth"]).
	Products []string
	// SameDayMicrodeposits and AutomatedMicrodeposits turn on Plaid's own
	// micro-deposit flows in new link sessions that ask for auth (sent as
	// auth.same_day_microdeposits_enabled and
	// auth.automated_microdeposits_enabled): Plaid sends and checks the
	// deposits, and its verification_status drives kluis's verification
	// (docs/PLAID.md "Micro-deposits through Plaid").
	SameDayMicrodeposits   bool
	AutomatedMicrodeposits bool
}

// Provider is the Plaid adapter. It is safe for concurrent use.
type Provider struct {
	clientID, secret string
	baseURL          string
	http             *http.Client
	timeout          time.Duration
	maxRetries       int
	baseDelay        time.Duration
	maxDelay         time.Duration
	clock            kluis.Clock

	clientName   string
	language     string
	countryCodes []string
	products     []string
	redirectURI  string
	androidPkg   string
	sameDay      bool
	automated    bool

	keys keyCache
}

// New checks opts and returns a provider. It does not call Plaid.
func New(opts Options) (*Provider, error) {
	if opts.ClientID == "" || opts.Secret == "" {
		return nil, errors.New("plaid: no API keys: set the Plaid client id and secret")
	}
	base, err := checkBaseURL(opts.BaseURL)
	if err != nil {
		return nil, err
	}
	p := &Provider{
		clientID:     opts.ClientID,
		secret:       opts.Secret,
		baseURL:      base,
		http:         noRedirects(opts.HTTPClient),
		timeout:      orDuration(opts.Timeout, DefaultTimeout),
		maxRetries:   opts.MaxRetries,
		baseDelay:    orDuration(opts.RetryBaseDelay, DefaultRetryBaseDelay),
		maxDelay:     orDuration(opts.RetryMaxDelay, DefaultRetryMaxDelay),
		clock:        opts.Clock,
		clientName:   orString(opts.ClientName, DefaultClientName),
		language:     orString(opts.Language, DefaultLanguage),
		countryCodes: opts.CountryCodes,
		products:     opts.Products,
		redirectURI:  opts.RedirectURI,
		androidPkg:   opts.AndroidPackageName,
		sameDay:      opts.SameDayMicrodeposits,
		automated:    opts.AutomatedMicrodeposits,
	}
	settings := plaidlink.Settings{ClientName: opts.ClientName, CountryCodes: opts.CountryCodes, Language: opts.Language,
		RedirectURI: opts.RedirectURI, AndroidPackageName: opts.AndroidPackageName}
	for name, why := range settings.Problems() {
		return nil, fmt.Errorf("plaid: Link setting %s %s", name, why)
	}
	switch {
	case p.maxRetries == 0:
		p.maxRetries = DefaultMaxRetries
	case p.maxRetries < 0:
		p.maxRetries = 0
	}
	if p.clock == nil {
		p.clock = kluis.SystemClock{}
	}
	if len(p.countryCodes) == 0 {
		p.countryCodes = []string{"US"}
	}
	if len(p.products) == 0 {
		p.products = []string{"auth"}
	}
	size := opts.WebhookKeyCacheSize
	if size <= 0 {
		size = DefaultWebhookKeyCacheSize
	}
	interval := orDuration(opts.WebhookKeyFetchInterval, DefaultWebhookKeyFetchInterval)
	p.keys = keyCache{
		ttl:     orDuration(opts.WebhookKeyCacheTTL, DefaultWebhookKeyCacheTTL),
		size:    size,
		keys:    make(map[string]cachedKey),
		limiter: rate.NewLimiter(rate.Every(interval), 3),
		// The same rate again, for webhooks that name an item kluis holds.
		itemLane: rate.NewLimiter(rate.Every(interval), 3),
		group:    &singleflight.Group{},
		mu:       &sync.Mutex{},
	}
	return p, nil
}

// checkBaseURL refuses anything but https, except on loopback, so the API
// keys never cross a network in the clear.
func checkBaseURL(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("plaid: no base URL: set the Plaid environment URL, e.g. https://sandbox.plaid.com")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("plaid: the base URL must be an absolute URL with a host and nothing else")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return "", errors.New("plaid: the base URL must be https (plain http only on a loopback address)")
		}
	default:
		return "", errors.New("plaid: the base URL must be https")
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// noRedirects copies c (or a fresh client) so that redirects are returned,
// not followed: Go keeps custom headers such as PLAID-SECRET on a redirect.
func noRedirects(c *http.Client) *http.Client {
	var cp http.Client
	if c != nil {
		cp = *c
	}
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cp
}

func orDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func orString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Name implements banklink.Provider.
func (p *Provider) Name() string { return "plaid" }

type linkTokenUser struct {
	ClientUserID string `json:"client_user_id"`
}

// linkTokenCreateRequest is LinkTokenCreateRequest, with only the fields
// kluis sets.
type linkTokenCreateRequest struct {
	ClientName   string        `json:"client_name"`
	Language     string        `json:"language"`
	CountryCodes []string      `json:"country_codes"`
	User         linkTokenUser `json:"user"`
	Products     []string      `json:"products,omitempty"`
	Webhook      string        `json:"webhook,omitempty"`
	AccessToken  string        `json:"access_token,omitempty"`
	// RedirectURI and AndroidPackageName: at most one is sent (Plaid wants
	// android_package_name blank except for Android).
	RedirectURI        string                   `json:"redirect_uri,omitempty"`
	AndroidPackageName string                   `json:"android_package_name,omitempty"`
	AccountFilters     *linkTokenAccountFilters `json:"account_filters,omitempty"`
	Update             *linkTokenUpdate         `json:"update,omitempty"`
	Auth               *linkTokenAuth           `json:"auth,omitempty"`
}

// linkTokenAuth is LinkTokenCreateRequestAuth with the micro-deposit flows
// kluis can follow: Plaid's Same Day Micro-deposits (the user confirms a
// code in Link's update mode) and Automated Micro-deposits (Plaid confirms
// the deposit itself and sends an AUTH webhook).
type linkTokenAuth struct {
	SameDayMicrodepositsEnabled   bool `json:"same_day_microdeposits_enabled,omitempty"`
	AutomatedMicrodepositsEnabled bool `json:"automated_microdeposits_enabled,omitempty"`
}

// linkTokenAccountFilters is LinkTokenAccountFilters with its depository
// filter only: kluis links bank accounts.
type linkTokenAccountFilters struct {
	Depository struct {
		AccountSubtypes []string `json:"account_subtypes"`
	} `json:"depository"`
}

// linkTokenUpdate is LinkTokenCreateRequestUpdate.
type linkTokenUpdate struct {
	AccountSelectionEnabled bool `json:"account_selection_enabled"`
}

type linkTokenCreateResponse struct {
	LinkToken  string `json:"link_token"`
	Expiration string `json:"expiration"`
}

// CreateLinkToken implements banklink.Provider. In update mode (AccessToken
// set) no products are sent: Plaid takes them from the item.
func (p *Provider) CreateLinkToken(ctx context.Context, req banklink.LinkTokenRequest) (banklink.LinkToken, error) {
	if req.ClientUserID == "" {
		return banklink.LinkToken{}, providerError(kluis.EInternal, "plaid: a link token needs a client user id", nil)
	}
	in := linkTokenCreateRequest{
		ClientName:   p.clientName,
		Language:     p.language,
		CountryCodes: p.countryCodes,
		User:         linkTokenUser{ClientUserID: req.ClientUserID},
		Webhook:      req.WebhookURL,
		AccessToken:  req.AccessToken,
	}
	if req.AccessToken == "" {
		in.Products = req.Products
		if len(in.Products) == 0 {
			in.Products = p.products
		}
	}
	p.sessionSettings(&in, req)
	var out linkTokenCreateResponse
	if err := p.call(ctx, epLinkTokenCreate, in, &out); err != nil {
		return banklink.LinkToken{}, err
	}
	expires, err := time.Parse(time.RFC3339, out.Expiration)
	if out.LinkToken == "" || err != nil {
		return banklink.LinkToken{}, malformed(epLinkTokenCreate)
	}
	return banklink.LinkToken{Token: out.LinkToken, ExpiresAt: expires.UTC()}, nil
}

type publicTokenExchangeRequest struct {
	PublicToken string `json:"public_token"`
}

type publicTokenExchangeResponse struct {
	AccessToken string `json:"access_token"`
	ItemID      string `json:"item_id"`
}

// ExchangePublicToken implements banklink.Provider. It is never retried
// once the request may have reached Plaid: a second exchange of the same
// public token fails, and the first one's access token would be lost.
func (p *Provider) ExchangePublicToken(ctx context.Context, publicToken string) (banklink.Exchange, error) {
	if publicToken == "" {
		return banklink.Exchange{}, providerError(banklink.CodeInvalidToken, "plaid: empty public token", nil)
	}
	var out publicTokenExchangeResponse
	if err := p.call(ctx, epPublicTokenExchange, publicTokenExchangeRequest{PublicToken: publicToken}, &out); err != nil {
		return banklink.Exchange{}, err
	}
	if out.AccessToken == "" || out.ItemID == "" {
		return banklink.Exchange{}, malformed(epPublicTokenExchange)
	}
	return banklink.Exchange{AccessToken: out.AccessToken, ProviderItemID: out.ItemID}, nil
}

type accessTokenRequest struct {
	AccessToken string `json:"access_token"`
}

type account struct {
	AccountID string  `json:"account_id"`
	Name      string  `json:"name"`
	Mask      *string `json:"mask"`
	Type      string  `json:"type"`
	Subtype   *string `json:"subtype"`
	// VerificationStatus is set for accounts verified by micro-deposits or
	// a database rather than the user's login.
	VerificationStatus *string `json:"verification_status"`
}

type item struct {
	ItemID          string  `json:"item_id"`
	InstitutionID   *string `json:"institution_id"`
	InstitutionName *string `json:"institution_name"`
}

type accountsGetResponse struct {
	Accounts []account `json:"accounts"`
	Item     item      `json:"item"`
}

// GetAccounts implements banklink.Provider.
func (p *Provider) GetAccounts(ctx context.Context, accessToken string) (banklink.ItemAccounts, error) {
	if accessToken == "" {
		return banklink.ItemAccounts{}, providerError(banklink.CodeInvalidToken, "plaid: empty access token", nil)
	}
	var out accountsGetResponse
	if err := p.call(ctx, epAccountsGet, accessTokenRequest{AccessToken: accessToken}, &out); err != nil {
		return banklink.ItemAccounts{}, err
	}
	if out.Item.ItemID == "" {
		return banklink.ItemAccounts{}, malformed(epAccountsGet)
	}
	res := banklink.ItemAccounts{
		ProviderItemID: out.Item.ItemID,
		Institution:    banklink.Institution{ID: deref(out.Item.InstitutionID), Name: deref(out.Item.InstitutionName)},
		Accounts:       make([]banklink.ProviderAccount, 0, len(out.Accounts)),
	}
	for _, a := range out.Accounts {
		if a.AccountID == "" {
			return banklink.ItemAccounts{}, malformed(epAccountsGet)
		}
		res.Accounts = append(res.Accounts, banklink.ProviderAccount{
			ProviderAccountID: a.AccountID,
			Name:              a.Name,
			Mask:              deref(a.Mask),
			Type:              a.Type,
			Subtype:           deref(a.Subtype),
			// An unexpected value passes only if it is a plain word:
			// kluis treats anything it does not know as unverified.
			VerificationStatus: plaidwebhook.SafeToken(deref(a.VerificationStatus)),
		})
	}
	return res, nil
}

type achNumbers struct {
	AccountID string `json:"account_id"`
	Account   string `json:"account"`
	Routing   string `json:"routing"`
	Tokenized bool   `json:"is_tokenized_account_number"`
}

type authGetResponse struct {
	Numbers struct {
		ACH []achNumbers `json:"ach"`
	} `json:"numbers"`
}

// GetAuth implements banklink.Provider. Only ACH numbers (US accounts) are
// returned; an item with none answers CodeProductNotSupported, as Plaid's
// NO_AUTH_ACCOUNTS does.
func (p *Provider) GetAuth(ctx context.Context, accessToken string) ([]banklink.AuthNumbers, error) {
	if accessToken == "" {
		return nil, providerError(banklink.CodeInvalidToken, "plaid: empty access token", nil)
	}
	var out authGetResponse
	if err := p.call(ctx, epAuthGet, accessTokenRequest{AccessToken: accessToken}, &out); err != nil {
		return nil, err
	}
	if len(out.Numbers.ACH) == 0 {
		return nil, providerError(banklink.CodeProductNotSupported, "plaid: the item has no accounts with ACH numbers", nil)
	}
	res := make([]banklink.AuthNumbers, 0, len(out.Numbers.ACH))
	for _, n := range out.Numbers.ACH {
		if n.AccountID == "" || n.Account == "" || n.Routing == "" {
			return nil, malformed(epAuthGet)
		}
		res = append(res, banklink.AuthNumbers{ProviderAccountID: n.AccountID, AccountNumber: n.Account, RoutingNumber: n.Routing,
			Tokenized: n.Tokenized})
	}
	return res, nil
}

// RemoveItem implements banklink.Provider. It is not retried once the
// request may have reached Plaid; a later call for a removed item answers
// CodeInvalidToken, which callers unlinking an item may take as done.
func (p *Provider) RemoveItem(ctx context.Context, accessToken string) error {
	if accessToken == "" {
		return providerError(banklink.CodeInvalidToken, "plaid: empty access token", nil)
	}
	var out struct{}
	return p.call(ctx, epItemRemove, accessTokenRequest{AccessToken: accessToken}, &out)
}

type accessTokenInvalidateResponse struct {
	NewAccessToken string `json:"new_access_token"`
}

// RotateAccessToken implements banklink.Provider. It is never retried once
// the request may have reached Plaid: the old token may already be dead.
func (p *Provider) RotateAccessToken(ctx context.Context, accessToken string) (string, error) {
	if accessToken == "" {
		return "", providerError(banklink.CodeInvalidToken, "plaid: empty access token", nil)
	}
	var out accessTokenInvalidateResponse
	if err := p.call(ctx, epAccessTokenInvalidate, accessTokenRequest{AccessToken: accessToken}, &out); err != nil {
		return "", err
	}
	if out.NewAccessToken == "" {
		return "", malformed(epAccessTokenInvalidate)
	}
	return out.NewAccessToken, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// malformed is the error for a 200 answer that lacks what the spec
// promises: Plaid's failure, never kluis's 500.
func malformed(ep endpoint) error {
	return providerError(banklink.CodeProviderError, fmt.Sprintf("plaid %s: malformed answer", ep.path), nil)
}

var _ banklink.Provider = (*Provider)(nil)

// sessionSettings adds to in what the link session asks for where Plaid
// allows it per session: the platform's OAuth return (an Android app's
// package, or the redirect URI), the depository subtypes Link offers, and
// account selection in update mode (how a user adds accounts the item's
// NEW_ACCOUNTS_AVAILABLE announced).
func (p *Provider) sessionSettings(in *linkTokenCreateRequest, req banklink.LinkTokenRequest) {
	app := req.Link
	androidPkg, redirectURI := orString(app.AndroidPackageName, p.androidPkg), orString(app.RedirectURI, p.redirectURI)
	if req.Platform == banklink.PlatformAndroid && androidPkg != "" {
		in.AndroidPackageName = androidPkg
	} else {
		in.RedirectURI = redirectURI
	}
	// The app's own Link settings (apps file) over the provider's.
	in.ClientName, in.Language = orString(app.ClientName, in.ClientName), orString(app.Language, in.Language)
	if len(app.CountryCodes) > 0 {
		in.CountryCodes = app.CountryCodes
	}
	if len(req.AccountSubtypes) > 0 {
		in.AccountFilters = &linkTokenAccountFilters{}
		in.AccountFilters.Depository.AccountSubtypes = req.AccountSubtypes
	}
	if req.AccessToken != "" && req.AccountSelection {
		in.Update = &linkTokenUpdate{AccountSelectionEnabled: true}
	}
	in.Auth = p.authOptions(in.Products)
}

// authOptions are the micro-deposit flows a new link session with these
// products turns on: none without auth (Plaid ties them to it) or in update
// mode (no products: the item's flow is already chosen), and Same Day only
// when auth is the one product, as Plaid requires (Same Day items can carry
// no other product).
func (p *Provider) authOptions(products []string) *linkTokenAuth {
	hasAuth := false
	for _, pr := range products {
		hasAuth = hasAuth || pr == "auth"
	}
	if !hasAuth {
		return nil
	}
	a := linkTokenAuth{SameDayMicrodepositsEnabled: p.sameDay && len(products) == 1,
		AutomatedMicrodepositsEnabled: p.automated}
	if a == (linkTokenAuth{}) {
		return nil
	}
	return &a
}
