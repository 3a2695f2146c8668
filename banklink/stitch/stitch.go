// Package stitch is kluis's adapter for Stitch (docs.stitch.money), the South
// African open-banking aggregator, behind banklink.Provider.
//
// Linking is OAuth 2.0's authorization-code flow with PKCE (S256): the link
// token is the authorize URL, whose state banklink binds to the link
// session and from which the adapter derives the PKCE verifier under a key
// of its own (nothing to store, nothing the app or the browser sees); Stitch
// returns to kluis's GET /link/callback/stitch, whose query becomes the
// public token. The exchange redeems the code with the client secret
// (client_secret_post) and the verifier. Accounts and account holders come
// from Stitch's GraphQL API with the user token.
//
// A Stitch user token lives 15 minutes and is renewed with a refresh token
// that Stitch replaces on every use. The adapter keeps both, with the
// expiry and the Stitch user, in one opaque bundle that banklink seals as
// the item's access token; RotateAccessToken is the refresh (the old pair
// dies, the new pair exists only in the answer), and banklink's token
// lease makes sure one kluis instance at a time spends a refresh token and
// that the new pair is committed before anyone uses it. ServiceToken gives
// a service the user token alone, never the refresh token.
package stitch

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
)

// Name is the provider's name in KLUIS_BANK_PROVIDERS and on every item.
const Name = "stitch"

// Scopes are the user scopes kluis asks for: an OpenID identity (the id
// token's sub names the item), a refresh token, the accounts with their
// numbers, and their holders.
const Scopes = "openid offline_access accounts accountholders"

// DefaultTimeout bounds one call to Stitch.
const DefaultTimeout = 20 * time.Second

// Options configures the adapter.
type Options struct {
	ClientID     string
	ClientSecret string
	// BaseURL is Stitch's API (the GraphQL endpoint is BaseURL/graphql):
	// https://api.stitch.money. AuthURL is its identity server (authorize,
	// token and revocation endpoints under /connect):
	// https://secure.stitch.money.
	BaseURL string
	AuthURL string
	// RedirectURI is kluis's callback as registered with Stitch:
	// https://<public host>/link/callback/stitch.
	RedirectURI string
	// PKCEKey derives each session's PKCE verifier from its state
	// (default: derived from ClientSecret).
	PKCEKey []byte
	// WebhookSecret verifies Stitch's webhooks (Svix, "whsec_…"); empty:
	// every webhook is refused.
	WebhookSecret string
	HTTPClient    *http.Client
	Clock         kluis.Clock
	Timeout       time.Duration
}

// Provider is the Stitch adapter. It is safe for concurrent use.
type Provider struct {
	clientID, clientSecret string
	baseURL, authURL       string
	redirectURI            string
	pkceKey                []byte
	webhookKey             []byte
	http                   *http.Client
	clock                  kluis.Clock
	timeout                time.Duration
	clientTokens           clientTokenCache
}

// New checks opts and returns the adapter.
func New(opts Options) (*Provider, error) {
	if opts.ClientID == "" || opts.ClientSecret == "" {
		return nil, errors.New("stitch: STITCH_CLIENT_ID and STITCH_CLIENT_SECRET are required")
	}
	for _, u := range []string{opts.BaseURL, opts.AuthURL, opts.RedirectURI} {
		if p, err := url.Parse(u); err != nil || p.Host == "" || (p.Scheme != "https" && p.Scheme != "http") {
			return nil, errors.New("stitch: STITCH_BASE_URL, STITCH_AUTH_URL and the redirect URI must be http(s) URLs")
		}
	}
	p := &Provider{clientID: opts.ClientID, clientSecret: opts.ClientSecret,
		baseURL: strings.TrimRight(opts.BaseURL, "/"), authURL: strings.TrimRight(opts.AuthURL, "/"),
		redirectURI: opts.RedirectURI, pkceKey: opts.PKCEKey, http: opts.HTTPClient, clock: opts.Clock, timeout: opts.Timeout}
	if len(p.pkceKey) == 0 {
		m := hmac.New(sha256.New, []byte(opts.ClientSecret))
		m.Write([]byte("kluis/stitch/pkce-key"))
		p.pkceKey = m.Sum(nil)
	}
	if opts.WebhookSecret != "" {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(opts.WebhookSecret, "whsec_"))
		if err != nil || len(key) == 0 {
			return nil, errors.New("stitch: the webhook secret must be whsec_ followed by base64")
		}
		p.webhookKey = key
	}
	if p.http == nil {
		p.http = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if p.clock == nil {
		p.clock = kluis.SystemClock{}
	}
	if p.timeout <= 0 {
		p.timeout = DefaultTimeout
	}
	return p, nil
}

// Name is "stitch".
func (p *Provider) Name() string { return Name }

// CreateLinkToken returns the authorize URL for req.State (a random state
// when banklink gives none): the page where the user picks a bank, logs in
// and consents. It calls nothing. Update mode (an item whose bank asks the
// user to authorize again, or whose token kluis lost) is the same
// authorization again: banklink gives no access token for it, and redeems
// the code for the item's new token pair (banklink/reauthorize.go). An
// access token given is refused: Stitch has no update mode that takes one.
func (p *Provider) CreateLinkToken(_ context.Context, req banklink.LinkTokenRequest) (banklink.LinkToken, error) {
	if req.AccessToken != "" {
		return banklink.LinkToken{}, providerError(banklink.CodeProductNotSupported,
			"stitch: update mode authorizes anew and takes no access token", nil)
	}
	state := req.State
	if state == "" {
		var b [32]byte
		_, _ = rand.Read(b[:])
		state = base64.RawURLEncoding.EncodeToString(b[:])
	}
	return banklink.LinkToken{Token: p.AuthorizeURL(state)}, nil
}

// AuthorizeURL is Stitch's authorize endpoint for state, with the PKCE
// challenge and the nonce derived from it.
func (p *Provider) AuthorizeURL(state string) string {
	q := url.Values{}
	q.Set("client_id", p.clientID)
	q.Set("scope", Scopes)
	q.Set("response_type", "code")
	q.Set("redirect_uri", p.redirectURI)
	q.Set("state", state)
	q.Set("nonce", p.derive("nonce", state))
	sum := sha256.Sum256([]byte(p.verifier(state)))
	q.Set("code_challenge", base64.RawURLEncoding.EncodeToString(sum[:]))
	q.Set("code_challenge_method", "S256")
	return p.authURL + "/connect/authorize?" + q.Encode()
}

// verifier is the PKCE code verifier of state: 43 characters of base64url
// (RFC 7636 4.1), never stored, never sent but to the token endpoint.
func (p *Provider) verifier(state string) string { return p.derive("pkce-verifier", state) }

func (p *Provider) derive(label, state string) string {
	m := hmac.New(sha256.New, p.pkceKey)
	m.Write([]byte("kluis/stitch/" + label + "\x00" + state))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// PublicTokenFromCallback turns the query Stitch redirected the user back
// with into the public token ExchangePublicToken takes. A user who declined
// or an error from Stitch is CodeAccessNotGranted; a query without a code
// or state is CodeInvalidToken.
func (p *Provider) PublicTokenFromCallback(query url.Values) (string, error) {
	if e := query.Get("error"); e != "" {
		return "", providerError(banklink.CodeAccessNotGranted, "stitch: the user did not authorize kluis",
			&apiError{What: "authorize", Code: safeToken(e)})
	}
	code, state := query.Get("code"), query.Get("state")
	if code == "" || state == "" || len(code) > 1024 || len(state) > 256 {
		return "", providerError(banklink.CodeInvalidToken, "stitch: the callback carries no code", nil)
	}
	return callback{State: state, Code: code}.encode(), nil
}

// ExchangePublicToken redeems the authorization code with the client
// secret and the PKCE verifier. A code that is unknown, spent, expired or
// not this session's is CodeInvalidToken.
func (p *Provider) ExchangePublicToken(ctx context.Context, publicToken string) (banklink.Exchange, error) {
	cb, err := decodeCallback(publicToken)
	if err != nil {
		return banklink.Exchange{}, providerError(banklink.CodeInvalidToken, "stitch exchange: not a Stitch public token", nil)
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {cb.Code},
		"redirect_uri": {p.redirectURI}, "code_verifier": {p.verifier(cb.State)}}
	var ans tokenAnswer
	if err := p.postForm(ctx, "exchange code", p.authURL+"/connect/token", form, &ans); err != nil {
		return banklink.Exchange{}, err
	}
	b, err := p.bundleOf(ans, "")
	if err != nil {
		return banklink.Exchange{}, err
	}
	return banklink.Exchange{AccessToken: b.encode(), ProviderItemID: b.User}, nil
}

// RotateAccessToken spends the bundle's refresh token for a new user token
// and refresh token. Stitch kills the old refresh token at once and the
// new pair exists only in the answer: a lost answer is kluis.EUnavailable,
// after which the old bundle may be dead (banklink then finds out by
// spending it again). A refresh token Stitch no longer accepts is
// CodeInvalidToken.
func (p *Provider) RotateAccessToken(ctx context.Context, token string) (string, error) {
	b, err := decodeBundle(token)
	if err != nil {
		return "", providerError(banklink.CodeInvalidToken, "stitch refresh: not a Stitch credential", nil)
	}
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {b.Refresh}}
	var ans tokenAnswer
	if err := p.postForm(ctx, "refresh", p.authURL+"/connect/token", form, &ans); err != nil {
		return "", err
	}
	fresh, err := p.bundleOf(ans, b.User)
	if err != nil {
		return "", err
	}
	return fresh.encode(), nil
}

// RemoveItem revokes the bundle's refresh token (and with it the user's
// grant) at Stitch's revocation endpoint. A token Stitch does not know is
// CodeInvalidToken.
func (p *Provider) RemoveItem(ctx context.Context, token string) error {
	b, err := decodeBundle(token)
	if err != nil {
		return providerError(banklink.CodeInvalidToken, "stitch revoke: not a Stitch credential", nil)
	}
	form := url.Values{"token": {b.Refresh}, "token_type_hint": {"refresh_token"}}
	return p.postForm(ctx, "revoke", p.authURL+"/connect/revocation", form, nil)
}

// ServiceToken is what a service revealing the item's credential gets: the
// user token and when it expires, never the refresh token.
func (p *Provider) ServiceToken(token string) (string, time.Time, error) {
	b, err := decodeBundle(token)
	if err != nil {
		return "", time.Time{}, providerError(kluis.EInternal, "stitch: the sealed credential is not a Stitch credential", nil)
	}
	return b.Access, b.expiresAt(), nil
}

// bundleOf builds a bundle from a token answer; user is the item's Stitch
// user when known (a refresh), else read from the id token.
func (p *Provider) bundleOf(ans tokenAnswer, user string) (bundle, error) {
	if ans.AccessToken == "" || ans.RefreshToken == "" || ans.ExpiresIn <= 0 {
		return bundle{}, providerError(banklink.CodeProviderError, "stitch: the token answer lacks a user token, a refresh token or an expiry", nil)
	}
	if user == "" {
		user = idTokenSubject(ans.IDToken)
		if user == "" {
			return bundle{}, providerError(banklink.CodeProviderError, "stitch: the token answer lacks an id token with a subject", nil)
		}
	}
	exp := p.clock.Now().Add(time.Duration(ans.ExpiresIn) * time.Second)
	return bundle{Access: ans.AccessToken, Refresh: ans.RefreshToken, Expires: exp.Unix(), User: user}, nil
}

// idTokenSubject reads the sub claim of an id token. The token came straight
// from Stitch's token endpoint over TLS, which OpenID Connect Core 3.1.3.7
// accepts in place of checking its signature; its sub only names the item.
func idTokenSubject(idToken string) string {
	parts := strings.Split(idToken, ".")
	if len(parts) != 3 {
		return ""
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(raw, &claims) != nil || len(claims.Sub) > 128 {
		return ""
	}
	return claims.Sub
}

var (
	_ banklink.Provider       = (*Provider)(nil)
	_ banklink.OAuthProvider  = (*Provider)(nil)
	_ banklink.ExpiringTokens = (*Provider)(nil)
)
