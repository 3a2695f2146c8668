package plaid

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaidwebhook"
)

// endpoint is one Plaid operation. idempotent says whether it may be
// repeated after the request could have reached Plaid.
type endpoint struct {
	path       string
	idempotent bool
}

// The operations the adapter calls. Link token creation only mints a
// short-lived token, so a repeat is harmless; the exchange burns the public
// token, removal and invalidation change the item: none of those three is
// repeated once Plaid may have seen it.
var (
	epLinkTokenCreate       = endpoint{"/link/token/create", true}
	epPublicTokenExchange   = endpoint{"/item/public_token/exchange", false}
	epAccountsGet           = endpoint{"/accounts/get", true}
	epAuthGet               = endpoint{"/auth/get", true}
	epItemRemove            = endpoint{"/item/remove", false}
	epAccessTokenInvalidate = endpoint{"/item/access_token/invalidate", false}
	epWebhookKeyGet         = endpoint{"/webhook_verification_key/get", true}
)

// outcome is what one attempt produced: a transport error, or an answer.
type outcome struct {
	err     error // transport error, timeout or oversized answer
	written bool  // whether the request was fully written before err
	status  int
	body    []byte
	perr    plaidError
	// retryAfter is the Retry-After header, if Plaid sent one.
	retryAfter time.Duration
}

// plaidError is Plaid's error body. error_message and display_message are
// deliberately not decoded: they can echo input and must never be passed on.
type plaidError struct {
	ErrorType string `json:"error_type"`
	ErrorCode string `json:"error_code"`
	RequestID string `json:"request_id"`
}

// call sends in to ep and decodes a 200 answer into out, retrying where it
// is safe, at most 1+maxRetries attempts in all.
func (p *Provider) call(ctx context.Context, ep endpoint, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return providerError(kluis.EInternal, fmt.Sprintf("plaid %s: encode request", ep.path), err)
	}
	for attempt := 0; ; attempt++ {
		o := p.attempt(ctx, ep, body)
		if o.err == nil && o.status == http.StatusOK {
			if err := json.Unmarshal(o.body, out); err != nil {
				return malformed(ep)
			}
			return nil
		}
		if ctx.Err() != nil {
			return unavailable(ep, "call abandoned", ctx.Err())
		}
		if attempt >= p.maxRetries || !retryable(ep, o) {
			return classify(ep, o)
		}
		delay := p.backoff(attempt)
		if o.retryAfter > 0 {
			if o.retryAfter > p.maxDelay {
				// Plaid asks for a longer pause than a call may take.
				return classify(ep, o)
			}
			delay = o.retryAfter
		}
		if err := kluis.Sleep(ctx, delay); err != nil {
			return unavailable(ep, "call abandoned", err)
		}
	}
}

// attempt makes one request, bounded by the attempt timeout.
func (p *Provider) attempt(ctx context.Context, ep endpoint, body []byte) outcome {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var written atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		// A request whose write failed is incomplete: Plaid cannot act on
		// half a JSON body, so only a complete write counts.
		WroteRequest: func(info httptrace.WroteRequestInfo) { written.Store(info.Err == nil) },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.baseURL+ep.path, bytes.NewReader(body))
	if err != nil {
		return outcome{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("PLAID-CLIENT-ID", p.clientID)
	req.Header.Set("PLAID-SECRET", p.secret)
	req.Header.Set("Plaid-Version", APIVersion)
	res, err := p.http.Do(req)
	if err != nil {
		return outcome{err: err, written: written.Load()}
	}
	defer res.Body.Close()
	o := outcome{status: res.StatusCode, written: true, retryAfter: parseRetryAfter(res.Header.Get("Retry-After"))}
	o.body, err = io.ReadAll(io.LimitReader(res.Body, MaxResponseBytes+1))
	switch {
	case err != nil:
		o.err = err
	case len(o.body) > MaxResponseBytes:
		o.err = errors.New("answer larger than the cap")
	case res.StatusCode != http.StatusOK:
		// A body that is not Plaid's error shape leaves perr empty; the
		// status alone then decides.
		_ = json.Unmarshal(o.body, &o.perr)
	}
	return o
}

// retryable says whether repeating ep after o cannot do anything twice.
func retryable(ep endpoint, o outcome) bool {
	if o.err != nil {
		// Not fully written: Plaid cannot have acted on it.
		return !o.written || ep.idempotent
	}
	if o.status == http.StatusTooManyRequests || o.perr.ErrorType == "RATE_LIMIT_EXCEEDED" || o.perr.ErrorCode == "RATE_LIMIT_EXCEEDED" {
		// Plaid refused the request without acting on it.
		return true
	}
	return o.status >= 500 && ep.idempotent
}

// backoff is the pause before retry number attempt+1: exponential, capped,
// with full jitter over its upper half so that callers spread out.
func (p *Provider) backoff(attempt int) time.Duration {
	d := p.baseDelay << min(attempt, 16)
	if d > p.maxDelay || d <= 0 {
		d = p.maxDelay
	}
	half := d / 2
	return half + rand.N(half+1) // #nosec G404 -- retry jitter only spreads retries; nothing depends on it being unpredictable
}

// parseRetryAfter reads a Retry-After in seconds; dates and nonsense count
// as absent.
func parseRetryAfter(v string) time.Duration {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > 3600 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// apiError is the cause kept under a kluis error for logs: the endpoint, the
// status and Plaid's type, code and request id, all sanitized. It never
// holds Plaid's error_message.
type apiError struct {
	Endpoint  string
	Status    int
	Type      string
	Code      string
	RequestID string
}

func (e *apiError) Error() string {
	s := fmt.Sprintf("plaid %s: HTTP %d", e.Endpoint, e.Status)
	if e.Type != "" || e.Code != "" {
		s += fmt.Sprintf(" %s/%s", e.Type, e.Code)
	}
	if e.RequestID != "" {
		s += " request_id " + e.RequestID
	}
	return s
}

// errorKinds maps Plaid's error codes to kluis codes (docs/PLAID.md has
// the table and what kluis does with each). Codes not here fall back on
// the error type, then on the HTTP status. No Plaid answer becomes
// kluis.EInternal: the user's situation is a 4xx, Plaid's own failure or a
// refusal of kluis's request is a 503.
var errorKinds = map[string]string{
	// The user must act in Link's update mode (log in again, answer MFA,
	// unlock or set up the account at the bank).
	"ITEM_LOGIN_REQUIRED":      banklink.CodeItemLoginRequired,
	"INVALID_CREDENTIALS":      banklink.CodeInvalidCredentials,
	"INVALID_MFA":              banklink.CodeItemLoginRequired,
	"INVALID_SEND_METHOD":      banklink.CodeItemLoginRequired,
	"INSUFFICIENT_CREDENTIALS": banklink.CodeItemLoginRequired,
	"ITEM_LOCKED":              banklink.CodeItemLoginRequired,
	"USER_SETUP_REQUIRED":      banklink.CodeItemLoginRequired,
	"MFA_NOT_SUPPORTED":        banklink.CodeItemLoginRequired,
	"INVALID_UPDATED_USERNAME": banklink.CodeItemLoginRequired,
	"USER_INPUT_TIMEOUT":       banklink.CodeItemLoginRequired,
	"PASSWORD_RESET_REQUIRED":  banklink.CodeItemLoginRequired,
	"INVALID_OTP":              banklink.CodeItemLoginRequired,
	"INVALID_PHONE_NUMBER":     banklink.CodeItemLoginRequired,
	// The user did not share what kluis needs: update mode with account
	// selection grants it.
	"ACCESS_NOT_GRANTED":              banklink.CodeAccessNotGranted,
	"NO_ACCOUNTS":                     banklink.CodeNoAccounts,
	"NO_AUTH_ACCOUNTS":                banklink.CodeProductNotSupported,
	"NO_INVESTMENT_ACCOUNTS":          banklink.CodeProductNotSupported,
	"NO_INVESTMENT_AUTH_ACCOUNTS":     banklink.CodeProductNotSupported,
	"NO_LIABILITY_ACCOUNTS":           banklink.CodeProductNotSupported,
	"PRODUCTS_NOT_SUPPORTED":          banklink.CodeProductNotSupported,
	"ITEM_NOT_SUPPORTED":              banklink.CodeProductNotSupported,
	"INSTITUTION_NO_LONGER_SUPPORTED": banklink.CodeProductNotSupported,
	// Instant Match could not match the numbers the user typed: no
	// instant auth; micro-deposits verify the account instead.
	"INSTANT_MATCH_FAILED": banklink.CodeProductNotSupported,
	// Plaid is still gathering the data: the item is fine, and kluis
	// completes it later.
	"PRODUCT_NOT_READY":                      banklink.CodeProductNotReady,
	"RATE_LIMIT_EXCEEDED":                    banklink.CodeRateLimited,
	"INSTITUTION_DOWN":                       banklink.CodeInstitutionDown,
	"INSTITUTION_NOT_RESPONDING":             banklink.CodeInstitutionDown,
	"INSTITUTION_NOT_AVAILABLE":              banklink.CodeInstitutionDown,
	"INSTITUTION_NOT_ENABLED_IN_ENVIRONMENT": banklink.CodeProviderError,
	"INSTITUTION_NOT_FOUND":                  banklink.CodeProviderError,
	"INVALID_ACCESS_TOKEN":                   banklink.CodeInvalidToken,
	"INVALID_PUBLIC_TOKEN":                   banklink.CodeInvalidToken,
	"INVALID_LINK_TOKEN":                     banklink.CodeInvalidToken,
	// A removed item's access token answers ITEM_NOT_FOUND: the token is
	// as good as invalid.
	"ITEM_NOT_FOUND":            banklink.CodeInvalidToken,
	"ITEM_CONCURRENTLY_DELETED": banklink.CodeInvalidToken,
	"INTERNAL_SERVER_ERROR":     kluis.EUnavailable,
	"PLANNED_MAINTENANCE":       kluis.EUnavailable,
	// Our own keys or request are wrong: nothing the caller can fix, and
	// nothing a retry fixes either; an operator must.
	"INVALID_API_KEYS": banklink.CodeProviderError,
}

// typeKinds maps Plaid's error types for codes errorKinds does not name.
var typeKinds = map[string]string{
	"RATE_LIMIT_EXCEEDED": banklink.CodeRateLimited,
	"API_ERROR":           kluis.EUnavailable,
	"INSTITUTION_ERROR":   banklink.CodeInstitutionDown,
	// An item error kluis does not know: not claimed to be the user's to
	// fix, and an operator sees its code in the log.
	"ITEM_ERROR":      banklink.CodeProviderError,
	"INVALID_REQUEST": banklink.CodeProviderError,
	"INVALID_INPUT":   banklink.CodeProviderError,
	"INVALID_RESULT":  banklink.CodeProviderError,
}

// messages are the human part of each kluis code's message.
var messages = map[string]string{
	banklink.CodeItemLoginRequired:   "the item's login must be repaired in update mode",
	banklink.CodeRateLimited:         "rate limited by the provider",
	banklink.CodeInstitutionDown:     "the institution is not responding",
	banklink.CodeInvalidToken:        "the token is invalid or expired",
	banklink.CodeInvalidCredentials:  "the login credentials were refused",
	banklink.CodeProductNotSupported: "the institution does not support this product",
	banklink.CodeProductNotReady:     "the provider is still gathering the item's data",
	banklink.CodeAccessNotGranted:    "the user did not share the accounts or data needed; update mode with account selection grants it",
	banklink.CodeNoAccounts:          "the item has no accounts kluis can use; update mode with account selection adds them",
	banklink.CodeProviderError:       "the provider refused kluis's request",
	kluis.EUnavailable:               "provider unavailable, try again later",
	kluis.EInternal:                  "unexpected provider error",
}

// kindOf decides the kluis code of an answer that was not 200.
func kindOf(status int, perr plaidError) string {
	if k, ok := errorKinds[plaidwebhook.SafeCode(perr.ErrorCode)]; ok {
		return k
	}
	if status >= 500 && perr.ErrorType != "RATE_LIMIT_EXCEEDED" {
		// A code kluis does not know with a 5xx: Plaid's own failure,
		// whatever its type says.
		return kluis.EUnavailable
	}
	if k, ok := typeKinds[perr.ErrorType]; ok {
		return k
	}
	switch {
	case status == http.StatusTooManyRequests:
		return banklink.CodeRateLimited
	case status >= 500:
		return kluis.EUnavailable
	default:
		return banklink.CodeProviderError
	}
}

// classify turns a failed attempt into the kluis error the caller sees.
func classify(ep endpoint, o outcome) error {
	if o.err != nil {
		return unavailable(ep, "no answer", o.err)
	}
	ae := &apiError{
		Endpoint:  ep.path,
		Status:    o.status,
		Type:      plaidwebhook.SafeCode(o.perr.ErrorType),
		Code:      plaidwebhook.SafeCode(o.perr.ErrorCode),
		RequestID: safeRequestID(o.perr.RequestID),
	}
	kind := kindOf(o.status, o.perr)
	detail := "HTTP " + strconv.Itoa(o.status)
	if ae.Code != "" {
		detail = ae.Code
	}
	if ae.RequestID != "" {
		detail += ", request_id " + ae.RequestID
	}
	msg := fmt.Sprintf("plaid %s: %s (%s)", ep.path, messages[kind], detail)
	e := providerError(kind, msg, ae)
	if kind == banklink.CodeRateLimited && o.retryAfter > 0 {
		e = e.With("retry_after_seconds", int(o.retryAfter/time.Second))
	}
	return e
}

// unavailable is the error for a call that got no usable answer. The cause
// (a transport error names only the URL, which holds no secret) is kept for
// logs.
func unavailable(ep endpoint, what string, cause error) error {
	return providerError(kluis.EUnavailable, fmt.Sprintf("plaid %s: %s, try again later", ep.path, what), cause)
}

// providerError builds a kluis error that wraps banklink.ErrProvider, and
// kluis.ErrUnavailable for EUnavailable, with cause kept for logs.
func providerError(code, msg string, cause error) *kluis.Error {
	causes := []error{banklink.ErrProvider}
	if code == kluis.EUnavailable {
		causes = append(causes, kluis.ErrUnavailable)
	}
	if cause != nil {
		causes = append(causes, cause)
	}
	return kluis.Wrap(code, msg, errors.Join(causes...))
}

// safeRequestID passes Plaid's request ids (15 alphanumerics, with
// letters) and drops anything else: a string of digits could be an account
// number echoed back, and a long one the secret (30 characters).
func safeRequestID(s string) string {
	if len(s) > 24 {
		return ""
	}
	letters := false
	for _, c := range s {
		switch {
		case c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z':
			letters = true
		case c >= '0' && c <= '9':
		default:
			return ""
		}
	}
	if !letters {
		return ""
	}
	return s
}
