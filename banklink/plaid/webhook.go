package plaid

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaidwebhook"
)

// VerificationHeader carries Plaid's webhook signature: a compact JWT.
const VerificationHeader = "Plaid-Verification"

// Webhook freshness, as Plaid documents it: a webhook whose iat is more than
// five minutes old is refused (a replay); an iat ahead of our clock is
// allowed only by a small leeway for clock skew.
const (
	MaxWebhookAge    = 5 * time.Minute
	WebhookClockSkew = 30 * time.Second
)

// Bounds on what is parsed before the signature is checked.
const (
	maxHeaderBytes = 4096
	maxKidBytes    = 128
	// unknownKidTTL is how long a kid Plaid does not know is refused
	// without asking again.
	unknownKidTTL = 5 * time.Minute
	// maxRemembered bounds the maps of unknown kids and of items' fetches.
	maxRemembered = 4096
	// itemFetchInterval is how often webhooks naming one item may have an
	// unknown kid fetched from the lane reserved for known items.
	itemFetchInterval = time.Minute
	// refreshFraction: a cached key older than ttl/refreshFraction is
	// fetched again in the background.
	refreshFraction = 24
)

// webhookClaims are the claims of a Plaid-Verification JWT.
type webhookClaims struct {
	RequestBodySHA256 string `json:"request_body_sha256"`
	jwt.RegisteredClaims
}

// errBadSignature is the cause kept under every refusal; the reason stays in
// the wrapped error for logs, never in the message.
var errBadSignature = errors.New("plaid webhook: bad signature")

func badSignature(reason string) error {
	return providerError(banklink.CodeBadSignature, "plaid webhook: signature refused", fmt.Errorf("%w: %s", errBadSignature, reason))
}

// errKeyNotFetched is the cause of a webhook that could not be checked yet.
var errKeyNotFetched = errors.New("plaid webhook: signing key not fetched")

// keyUnavailable says the webhook's key may not be fetched now: not a bad
// signature (403/401 would make Plaid give up on a genuine webhook), but
// "check back later", which Plaid's retries do.
func keyUnavailable(reason string) error {
	return providerError(banklink.CodeWebhookKeyUnavailable, "plaid webhook: signing key cannot be fetched now, try again later", fmt.Errorf("%w: %s", errKeyNotFetched, reason))
}

// VerifyWebhook implements banklink.Provider, following Plaid's webhook
// verification: the Plaid-Verification JWT must be ES256 (anything else is
// refused before any key is fetched), its kid must name a live key from
// /webhook_verification_key/get, its signature must hold, its iat must be
// within five minutes, and its request_body_sha256 must equal the SHA-256 of
// body (compared in constant time), and the key must not be past its
// expired_at. Every refusal is CodeBadSignature. When Plaid cannot be
// reached for an unknown key the error is kluis.EUnavailable, and when the
// budget for fetching unknown keys is spent it is
// banklink.CodeWebhookKeyUnavailable: both mean "not checked yet", so that
// the webhook is retried rather than dropped.
//
// Fetching the key of a kid kluis has not seen is the one thing a forger can
// make kluis do, so it is budgeted, and forged webhooks cannot spend what
// genuine ones need: a kid Plaid refused is remembered (refused without a
// fetch for a while); a kid is fetched by one caller at a time; fetches for
// webhooks that name an item kluis holds (banklink.WebhookItemKnown, which
// a forger cannot satisfy without knowing a Plaid item id) draw on a lane of
// their own, at most one per item a minute, so a flood of random kids that
// spends the shared lane leaves a genuine webhook its fetch after Plaid
// rotates its key. Cached keys are fetched again outside any budget, in the
// background every TTL/24 (hourly by default) and in the request once the
// TTL has passed, so that an expired_at Plaid sets is noticed.
//
// The verified body is read by plaidwebhook.Decode, the one reading of
// Plaid-shaped webhooks that the sandbox's webhooks go through too
// (docs/WEBHOOKS.md has every ITEM and AUTH code). The event ID names the
// delivery, not the body (deliveryID).
func (p *Provider) VerifyWebhook(ctx context.Context, header http.Header, body []byte) (banklink.WebhookEvent, error) {
	sum := sha256.Sum256(body)
	bodyHash := hex.EncodeToString(sum[:])
	if err := p.verifySignature(ctx, header.Get(VerificationHeader), bodyHash, body); err != nil {
		return banklink.WebhookEvent{}, err
	}
	ev, err := plaidwebhook.Decode(body)
	if err != nil {
		return banklink.WebhookEvent{}, err
	}
	ev.ID = deliveryID(header.Get(VerificationHeader), bodyHash)
	return ev, nil
}

// verifySignature checks the JWT in two passes: cheap checks on the
// unverified token first (algorithm, kid, freshness, body hash), so that
// junk never causes a key fetch, then the signature with the key, and the
// same claims again from the verified token.
func (p *Provider) verifySignature(ctx context.Context, token, bodyHash string, body []byte) error {
	if token == "" {
		return badSignature("missing header")
	}
	if len(token) > maxHeaderBytes {
		return badSignature("header too long")
	}
	kid, err := checkJOSEHeader(token)
	if err != nil {
		return badSignature(err.Error())
	}
	var unverified webhookClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &unverified); err != nil {
		return badSignature("malformed token")
	}
	if err := p.checkClaims(&unverified, bodyHash); err != nil {
		return badSignature(err.Error())
	}
	key, err := p.webhookKey(ctx, kid, body)
	if err != nil {
		return err
	}
	var claims webhookClaims
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(WebhookClockSkew),
		jwt.WithTimeFunc(p.clock.Now),
	)
	_, err = parser.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		if t.Method != jwt.SigningMethodES256 {
			return nil, errors.New("not ES256")
		}
		return key, nil
	})
	if err != nil {
		return badSignature("signature or claims invalid")
	}
	if err := p.checkClaims(&claims, bodyHash); err != nil {
		return badSignature(err.Error())
	}
	return nil
}

// joseHeader is the part of the JWT header looked at before the signature.
type joseHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

// checkJOSEHeader decodes the JWT header by hand and refuses any algorithm
// but ES256 before anything else happens, and returns the kid.
func checkJOSEHeader(token string) (string, error) {
	head, _, ok := strings.Cut(token, ".")
	if !ok {
		return "", errors.New("not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return "", errors.New("header not base64url")
	}
	var h joseHeader
	if err := json.Unmarshal(raw, &h); err != nil {
		return "", errors.New("header not JSON")
	}
	if h.Alg != jwt.SigningMethodES256.Alg() {
		return "", errors.New("algorithm not ES256")
	}
	if h.Kid == "" || len(h.Kid) > maxKidBytes || !printableASCII(h.Kid) {
		return "", errors.New("kid missing or malformed")
	}
	return h.Kid, nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// checkClaims requires a fresh iat and the body's hash.
func (p *Provider) checkClaims(c *webhookClaims, bodyHash string) error {
	if c.IssuedAt == nil {
		return errors.New("no iat")
	}
	now := p.clock.Now()
	iat := c.IssuedAt.Time
	if now.Sub(iat) > MaxWebhookAge {
		return errors.New("iat too old")
	}
	if iat.Sub(now) > WebhookClockSkew {
		return errors.New("iat in the future")
	}
	if subtle.ConstantTimeCompare([]byte(c.RequestBodySHA256), []byte(bodyHash)) != 1 {
		return errors.New("body hash mismatch")
	}
	return nil
}

// keyCache holds Plaid's webhook verification keys by kid: bounded, each
// entry refetched after ttl, fetches of uncached kids budgeted (a shared
// lane and a lane for webhooks naming a known item) and collapsed, and kids
// Plaid does not know remembered for a while.
type keyCache struct {
	ttl      time.Duration
	size     int
	limiter  *rate.Limiter // any unknown kid
	itemLane *rate.Limiter // unknown kids of webhooks naming a known item
	group    *singleflight.Group

	mu      *sync.Mutex
	keys    map[string]cachedKey
	unknown map[string]time.Time
	// itemFetched is when a webhook naming an item last drew on itemLane.
	itemFetched map[string]time.Time
}

type cachedKey struct {
	key     *ecdsa.PublicKey
	fetched time.Time
	// expires is the key's expired_at, zero while Plaid has set none.
	expires time.Time
	// tried is when a background refresh last started.
	tried time.Time
}

// usable returns the key unless now is past its expired_at.
func (k cachedKey) usable(now time.Time) (*ecdsa.PublicKey, error) {
	if !k.expires.IsZero() && !now.Before(k.expires) {
		return nil, badSignature("key expired")
	}
	return k.key, nil
}

// jwk is JWKPublicKey from the spec.
type jwk struct {
	Alg       string `json:"alg"`
	Crv       string `json:"crv"`
	Kid       string `json:"kid"`
	Kty       string `json:"kty"`
	Use       string `json:"use"`
	X         string `json:"x"`
	Y         string `json:"y"`
	CreatedAt int64  `json:"created_at"`
	ExpiredAt *int64 `json:"expired_at"`
}

type webhookKeyRequest struct {
	KeyID string `json:"key_id"`
}

type webhookKeyResponse struct {
	Key jwk `json:"key"`
}

// webhookKey returns the live key for kid, from the cache or from Plaid.
// body is the unverified webhook, read only to decide which fetch budget an
// unknown kid may draw on.
func (p *Provider) webhookKey(ctx context.Context, kid string, body []byte) (*ecdsa.PublicKey, error) {
	now := p.clock.Now()
	c := &p.keys
	c.mu.Lock()
	k, known := c.keys[kid]
	if known && now.Sub(k.fetched) < c.ttl {
		every := c.ttl / refreshFraction
		refresh := now.Sub(k.fetched) >= every && now.Sub(k.tried) >= every
		if refresh {
			k.tried = now
			c.keys[kid] = k
		}
		c.mu.Unlock()
		if refresh {
			p.refreshInBackground(ctx, kid)
		}
		return k.usable(now)
	}
	if at, ok := c.unknown[kid]; ok && now.Sub(at) < unknownKidTTL {
		c.mu.Unlock()
		return nil, badSignature("kid recently unknown")
	}
	c.mu.Unlock()
	v, err, _ := c.group.Do(kid, func() (any, error) {
		// Refreshing a cached kid happens once per TTL at most; only kids
		// never seen, which anyone can invent, draw on a budget.
		if !known {
			if err := p.allowFetch(ctx, body); err != nil {
				return nil, err
			}
		}
		return p.fetchWebhookKey(ctx, kid)
	})
	if err != nil {
		return nil, err
	}
	return v.(*ecdsa.PublicKey), nil
}

// refreshInBackground fetches a cached kid again without making the webhook
// wait, so that an expired_at Plaid sets is noticed within ttl/24 rather
// than ttl. One refresh per kid runs at a time; its failure changes nothing
// (the cached key stays until ttl, then is fetched in the request).
func (p *Provider) refreshInBackground(ctx context.Context, kid string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout*time.Duration(p.maxRetries+1))
	ch := p.keys.group.DoChan(kid, func() (any, error) { return p.fetchWebhookKey(ctx, kid) })
	go func() {
		defer cancel()
		<-ch
	}()
}

// allowFetch decides whether an unknown kid may be fetched now: from the
// shared lane while it lasts, else from the lane of webhooks that name an
// item kluis holds (one fetch per item per itemFetchInterval).
func (p *Provider) allowFetch(ctx context.Context, body []byte) error {
	c := &p.keys
	now := p.clock.Now()
	if c.limiter.AllowN(now, 1) {
		return nil
	}
	item := unverifiedItemID(body)
	if item == "" || !banklink.WebhookItemKnown(ctx, item) {
		return keyUnavailable("key fetch budget spent")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if at, ok := c.itemFetched[item]; ok && now.Sub(at) < itemFetchInterval {
		return keyUnavailable("key fetch budget of the item spent")
	}
	if !c.itemLane.AllowN(now, 1) {
		return keyUnavailable("key fetch budget of known items spent")
	}
	c.itemFetched = rememberAt(c.itemFetched, item, now)
	return nil
}

// unverifiedItemID reads item_id from a webhook body that is not verified
// yet; "" when there is none or it is not a plausible id.
func unverifiedItemID(body []byte) string {
	var b struct {
		ItemID string `json:"item_id"`
	}
	if json.Unmarshal(body, &b) != nil || len(b.ItemID) > maxKidBytes || !printableASCII(b.ItemID) {
		return ""
	}
	return b.ItemID
}

// rememberAt sets m[key] = at in a map bounded by maxRemembered: when full,
// one arbitrary entry goes (Go's map order is randomized), so a flood of
// new keys cannot empty it at once.
func rememberAt(m map[string]time.Time, key string, at time.Time) map[string]time.Time {
	if m == nil {
		m = make(map[string]time.Time)
	}
	if _, ok := m[key]; !ok && len(m) >= maxRemembered {
		for k := range m {
			delete(m, k)
			break
		}
	}
	m[key] = at
	return m
}

// fetchWebhookKey asks Plaid for kid's key and caches it if it is live.
func (p *Provider) fetchWebhookKey(ctx context.Context, kid string) (*ecdsa.PublicKey, error) {
	var out webhookKeyResponse
	err := p.call(ctx, epWebhookKeyGet, webhookKeyRequest{KeyID: kid}, &out)
	switch code := kluis.ErrorCode(err); {
	case err == nil:
	case code == kluis.EUnavailable || code == banklink.CodeRateLimited:
		return nil, err
	default:
		// Plaid refused the kid: remember that for a while.
		p.keys.remember(kid, p.clock.Now())
		return nil, badSignature("kid unknown to Plaid")
	}
	if out.Key.Kid != kid {
		return nil, badSignature("key answer for another kid")
	}
	now := p.clock.Now()
	var expires time.Time
	if out.Key.ExpiredAt != nil {
		expires = time.Unix(*out.Key.ExpiredAt, 0)
		if !now.Before(expires) {
			// Refused like an unknown kid, so it is not asked for again soon.
			p.keys.remember(kid, now)
			return nil, badSignature("key expired")
		}
	}
	key, err := ecKey(out.Key)
	if err != nil {
		return nil, badSignature(err.Error())
	}
	p.keys.put(kid, cachedKey{key: key, fetched: now, expires: expires})
	return key, nil
}

// ecKey turns a P-256 JWK into a public key, checking the point is on the
// curve.
func ecKey(k jwk) (*ecdsa.PublicKey, error) {
	if k.Kty != "EC" || k.Crv != "P-256" || (k.Alg != "" && k.Alg != "ES256") || (k.Use != "" && k.Use != "sig") {
		return nil, errors.New("key is not a P-256 signing key")
	}
	x, errX := base64.RawURLEncoding.DecodeString(k.X)
	y, errY := base64.RawURLEncoding.DecodeString(k.Y)
	if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
		return nil, errors.New("key coordinates malformed")
	}
	point := append(append([]byte{4}, x...), y...)
	key, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, errors.New("key not on the curve")
	}
	return key, nil
}

func (c *keyCache) put(kid string, k cachedKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.keys[kid]; !ok && len(c.keys) >= c.size {
		oldest := ""
		for id, v := range c.keys {
			if oldest == "" || v.fetched.Before(c.keys[oldest].fetched) {
				oldest = id
			}
		}
		delete(c.keys, oldest)
	}
	c.keys[kid] = k
	delete(c.unknown, kid)
}

// remember notes a kid Plaid does not know (or has expired), so that it is
// refused without a fetch for unknownKidTTL.
func (c *keyCache) remember(kid string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unknown = rememberAt(c.unknown, kid, now)
	delete(c.keys, kid)
}
