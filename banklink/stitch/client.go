package stitch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
)

// MaxResponseBytes caps an answer the adapter reads from Stitch.
const MaxResponseBytes = 1 << 20

// tokenAnswer is the token endpoint's answer (OAuth 2.0, RFC 6749 5.1).
type tokenAnswer struct {
	AccessToken  string `json:"access_token"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	IDToken      string `json:"id_token"`
	TokenType    string `json:"token_type"`
	Scope        string `json:"scope"`
}

// oauthError is the token endpoint's error body (RFC 6749 5.2).
// error_description is deliberately not decoded: it may echo input.
type oauthError struct {
	Error string `json:"error"`
}

// postForm sends a form to the token or revocation endpoint with the
// client's id and secret (client_secret_post, as Stitch documents) and
// decodes a 200 answer into out (nil: none expected).
func (p *Provider) postForm(ctx context.Context, what, endpoint string, form url.Values, out any) error {
	form.Set("client_id", p.clientID)
	form.Set("client_secret", p.clientSecret)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return providerError(kluis.EInternal, "stitch "+what+": build request", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	status, body, err := p.do(req)
	if err != nil {
		// The request may have reached Stitch and its answer been lost:
		// for a refresh, the old refresh token may be spent already.
		return providerError(kluis.EUnavailable, "stitch "+what+": no answer, try again later", err)
	}
	if status == http.StatusOK {
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(body, out); err != nil {
			return providerError(banklink.CodeProviderError, "stitch "+what+": malformed answer", nil)
		}
		return nil
	}
	var oe oauthError
	_ = json.Unmarshal(body, &oe)
	return oauthFailure(what, status, oe.Error)
}

// oauthFailure maps a refused token request to a kluis code.
func oauthFailure(what string, status int, code string) error {
	cause := &apiError{What: what, Status: status, Code: safeToken(code)}
	switch {
	case code == "invalid_grant" || code == "invalid_token":
		// A code or refresh token Stitch does not know, spent or expired.
		return providerError(banklink.CodeInvalidToken, "stitch "+what+": the token is not valid", cause)
	case status == http.StatusTooManyRequests:
		return providerError(banklink.CodeRateLimited, "stitch "+what+": rate limited, try again later", cause)
	case status >= 500:
		return providerError(kluis.EUnavailable, "stitch "+what+": Stitch is unavailable, try again later", cause)
	}
	return providerError(banklink.CodeProviderError, "stitch "+what+": Stitch refused the request", cause)
}

// gqlRequest is one GraphQL operation.
type gqlRequest struct {
	Query         string         `json:"query"`
	Variables     map[string]any `json:"variables,omitempty"`
	OperationName string         `json:"operationName,omitempty"`
}

// gqlError is one GraphQL error; its message is not kept (it may echo input).
type gqlError struct {
	Extensions struct {
		Code string `json:"code"`
	} `json:"extensions"`
}

// graphql runs op with bearer token and decodes its data into out.
func (p *Provider) graphql(ctx context.Context, token string, op gqlRequest, out any) error {
	what := "graphql " + op.OperationName
	raw, err := json.Marshal(op)
	if err != nil {
		return providerError(kluis.EInternal, "stitch "+what+": encode request", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.baseURL+"/graphql", bytes.NewReader(raw))
	if err != nil {
		return providerError(kluis.EInternal, "stitch "+what+": build request", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	status, body, err := p.do(req)
	if err != nil {
		return providerError(kluis.EUnavailable, "stitch "+what+": no answer, try again later", err)
	}
	var ans struct {
		Data   json.RawMessage `json:"data"`
		Errors []gqlError      `json:"errors"`
	}
	if jerr := json.Unmarshal(body, &ans); jerr != nil {
		if status >= 500 || status == http.StatusTooManyRequests {
			return oauthFailure(what, status, "")
		}
		return providerError(banklink.CodeProviderError, "stitch "+what+": malformed answer", &apiError{What: what, Status: status})
	}
	if len(ans.Errors) > 0 || status != http.StatusOK {
		code := ""
		if len(ans.Errors) > 0 {
			code = ans.Errors[0].Extensions.Code
		}
		return gqlFailure(what, status, code)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(ans.Data, out); err != nil {
		return providerError(banklink.CodeProviderError, "stitch "+what+": malformed answer", nil)
	}
	return nil
}

// gqlFailure maps a GraphQL error code to a kluis code.
func gqlFailure(what string, status int, code string) error {
	cause := &apiError{What: what, Status: status, Code: safeToken(code)}
	switch code {
	case "UNAUTHENTICATED":
		// An expired, revoked or unknown token.
		return providerError(banklink.CodeInvalidToken, "stitch "+what+": the token is not valid", cause)
	case "USER_INTERACTION_REQUIRED", "REAUTHORIZATION_REQUIRED":
		return providerError(banklink.CodeItemLoginRequired, "stitch "+what+": the user must authorize again", cause)
	case "BANK_UNAVAILABLE":
		return providerError(banklink.CodeInstitutionDown, "stitch "+what+": the bank is unavailable, try again later", cause)
	case "RATE_LIMITED":
		return providerError(banklink.CodeRateLimited, "stitch "+what+": rate limited, try again later", cause)
	}
	if status >= 500 {
		return providerError(kluis.EUnavailable, "stitch "+what+": Stitch is unavailable, try again later", cause)
	}
	return providerError(banklink.CodeProviderError, "stitch "+what+": Stitch refused the request", cause)
}

// do sends req and reads at most MaxResponseBytes of the answer.
func (p *Provider) do(req *http.Request) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(req.Context(), p.timeout)
	defer cancel()
	res, err := p.http.Do(req.WithContext(ctx))
	if err != nil {
		return 0, nil, scrub(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, MaxResponseBytes+1))
	if err != nil {
		return 0, nil, scrub(err)
	}
	if len(body) > MaxResponseBytes {
		return 0, nil, errors.New("stitch: answer larger than the cap")
	}
	return res.StatusCode, body, nil
}

// scrub keeps a transport error's kind but drops its URL (the authorize
// URL's query, or any other, must not reach a log).
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("stitch: %s: %w", ue.Op, ue.Err)
	}
	return err
}

// apiError is the cause kept under a kluis error for logs: what was asked,
// the status and Stitch's code, sanitized. Never a message of Stitch's.
type apiError struct {
	What   string
	Status int
	Code   string
}

func (e *apiError) Error() string {
	s := fmt.Sprintf("stitch %s: HTTP %d", e.What, e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	return s
}

// providerError builds a kluis error that wraps banklink.ErrProvider (and
// kluis.ErrUnavailable for EUnavailable), with cause kept for logs.
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

// safeToken passes short identifiers (error codes) and drops anything else.
func safeToken(s string) string {
	if len(s) > 64 {
		return "?"
	}
	for _, c := range s {
		if !(c == '_' || c == '-' || c == '.' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
			return "?"
		}
	}
	return s
}

// isCode reports whether err carries the kluis code code.
func isCode(err error, code string) bool { return kluis.ErrorCode(err) == code }
