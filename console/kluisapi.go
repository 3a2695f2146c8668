package console

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// apiClient calls kluis's compliance API over mutual TLS, with the signed-in
// staff member's token.
type apiClient struct {
	base string
	http *http.Client
}

func newAPIClient(base string, tlsCfg *tls.Config) *apiClient {
	return &apiClient{
		base: strings.TrimRight(base, "/"),
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}},
	}
}

// apiError is kluis's error answer: what the page may show (its message)
// and its cause (code and reason), e.g. mfa_stale.
type apiError struct {
	Status  int
	Code    string `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return fmt.Sprintf("kluis: %d %s", e.Status, e.Code) }

// call sends one request and decodes a 2xx JSON answer into out (when not
// nil). Other answers are *apiError. POSTs carry a fresh Idempotency-Key,
// so a retry of the same call by the network never applies twice.
func (a *apiClient) call(ctx context.Context, token, method, path string, body, out any) error {
	resp, err := a.do(ctx, token, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(out)
}

// do sends one request; a non-2xx answer is read into an *apiError.
func (a *apiClient) do(ctx context.Context, token, method, path string, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if method == http.MethodPost {
		req.Header.Set("Idempotency-Key", random(18))
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "kluis cannot be reached now; try again shortly"}
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	var env struct {
		Error apiError `json:"error"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&env)
	e := env.Error
	e.Status = resp.StatusCode
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return nil, &e
}

// The compliance API's shapes the pages show (api/openapi.yaml).
type (
	erasureRequest struct {
		ID                       string          `json:"id"`
		Status                   string          `json:"status"`
		SubjectPseudonym         string          `json:"subject_pseudonym"`
		Reason                   string          `json:"reason"`
		RequestedBy              string          `json:"requested_by"`
		RequestedAt              string          `json:"requested_at"`
		ApprovedBy               string          `json:"approved_by"`
		LastError                string          `json:"last_error"`
		CloseReason              string          `json:"close_reason"`
		ExceptionsAcknowledgedBy string          `json:"exceptions_acknowledged_by"`
		UnrevokedItems           []unrevokedItem `json:"unrevoked_items"`
	}
	unrevokedItem struct {
		ItemID   string `json:"item_id"`
		Provider string `json:"provider"`
		Reason   string `json:"reason"`
	}
	legalHold struct {
		ID               string `json:"id"`
		SubjectPseudonym string `json:"subject_pseudonym"`
		Reason           string `json:"reason"`
		CreatedBy        string `json:"created_by"`
		CreatedAt        string `json:"created_at"`
	}
	accessEntry struct {
		At    string `json:"at"`
		Actor struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		} `json:"actor"`
		Action  string `json:"action"`
		Kind    string `json:"kind"`
		Purpose string `json:"purpose"`
		Outcome string `json:"outcome"`
	}
)

func (a *apiClient) erasures(ctx context.Context, token, status string) ([]erasureRequest, error) {
	q := url.Values{"limit": {"100"}}
	if status != "" {
		q.Set("status", status)
	}
	var out struct {
		ErasureRequests []erasureRequest `json:"erasure_requests"`
	}
	err := a.call(ctx, token, http.MethodGet, "/compliance/v1/erasure-requests?"+q.Encode(), nil, &out)
	return out.ErasureRequests, err
}

func (a *apiClient) holds(ctx context.Context, token string) ([]legalHold, error) {
	var out struct {
		LegalHolds []legalHold `json:"legal_holds"`
	}
	err := a.call(ctx, token, http.MethodGet, "/compliance/v1/legal-holds?limit=100", nil, &out)
	return out.LegalHolds, err
}

func (a *apiClient) accessReport(ctx context.Context, token, subject, app string) ([]accessEntry, error) {
	var out struct {
		Entries []accessEntry `json:"entries"`
	}
	q := url.Values{"limit": {"100"}}
	if app != "" {
		q.Set("app", app)
	}
	err := a.call(ctx, token, http.MethodGet, "/compliance/v1/subjects/"+url.PathEscape(subject)+"/access-report?"+q.Encode(), nil, &out)
	return out.Entries, err
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
