package plaidtest

import (
	"net/http"
	"strconv"
)

// Fault is an answer to inject instead of the endpoint's own.
type Fault struct {
	// Status is the HTTP status (FailNext takes it from the error code).
	Status int
	// ErrorType and ErrorCode are Plaid's; ErrorMessage defaults to one
	// that echoes the request body, as a trap for code that passes Plaid's
	// messages on.
	ErrorType    string
	ErrorCode    string
	ErrorMessage string
	// RetryAfter, in seconds, sets a Retry-After header when positive.
	RetryAfter int
	// RawBody, when set, is sent as is instead of Plaid's error shape (an
	// HTML page from a proxy, garbage, a huge body).
	RawBody []byte
	// Drop closes the connection after reading the request, with no answer.
	Drop bool
}

// errorTable gives the type and status Plaid answers each error code with.
var errorTable = map[string]struct {
	typ    string
	status int
}{
	"ITEM_LOGIN_REQUIRED":                 {"ITEM_ERROR", http.StatusBadRequest},
	"ITEM_NOT_FOUND":                      {"ITEM_ERROR", http.StatusBadRequest},
	"INVALID_CREDENTIALS":                 {"ITEM_ERROR", http.StatusBadRequest},
	"PRODUCTS_NOT_SUPPORTED":              {"ITEM_ERROR", http.StatusBadRequest},
	"PRODUCT_NOT_READY":                   {"ITEM_ERROR", http.StatusBadRequest},
	"NO_AUTH_ACCOUNTS":                    {"ITEM_ERROR", http.StatusBadRequest},
	"NO_ACCOUNTS":                         {"ITEM_ERROR", http.StatusBadRequest},
	"RATE_LIMIT_EXCEEDED":                 {"RATE_LIMIT_EXCEEDED", http.StatusTooManyRequests},
	"ACCOUNTS_LIMIT":                      {"RATE_LIMIT_EXCEEDED", http.StatusTooManyRequests},
	"AUTH_LIMIT":                          {"RATE_LIMIT_EXCEEDED", http.StatusTooManyRequests},
	"INSTITUTION_DOWN":                    {"INSTITUTION_ERROR", http.StatusBadRequest},
	"INSTITUTION_NOT_RESPONDING":          {"INSTITUTION_ERROR", http.StatusBadRequest},
	"INSTITUTION_NOT_AVAILABLE":           {"INSTITUTION_ERROR", http.StatusBadRequest},
	"INSTITUTION_NO_LONGER_SUPPORTED":     {"INSTITUTION_ERROR", http.StatusBadRequest},
	"INVALID_ACCESS_TOKEN":                {"INVALID_INPUT", http.StatusBadRequest},
	"INVALID_PUBLIC_TOKEN":                {"INVALID_INPUT", http.StatusBadRequest},
	"INVALID_LINK_TOKEN":                  {"INVALID_INPUT", http.StatusBadRequest},
	"INVALID_API_KEYS":                    {"INVALID_INPUT", http.StatusBadRequest},
	"INVALID_WEBHOOK_VERIFICATION_KEY_ID": {"INVALID_INPUT", http.StatusBadRequest},
	"MISSING_FIELDS":                      {"INVALID_REQUEST", http.StatusBadRequest},
	"INVALID_FIELD":                       {"INVALID_REQUEST", http.StatusBadRequest},
	"INVALID_BODY":                        {"INVALID_REQUEST", http.StatusBadRequest},
	"INVALID_HEADERS":                     {"INVALID_REQUEST", http.StatusBadRequest},
	"INTERNAL_SERVER_ERROR":               {"API_ERROR", http.StatusInternalServerError},
	"PLANNED_MAINTENANCE":                 {"API_ERROR", http.StatusServiceUnavailable},

	// Issue 14: the rest of the codes the calls kluis makes can meet, and
	// those the spec's examples name.
	"INVALID_MFA":                            {"ITEM_ERROR", http.StatusBadRequest},
	"INVALID_SEND_METHOD":                    {"ITEM_ERROR", http.StatusBadRequest},
	"INSUFFICIENT_CREDENTIALS":               {"ITEM_ERROR", http.StatusBadRequest},
	"ITEM_LOCKED":                            {"ITEM_ERROR", http.StatusBadRequest},
	"USER_SETUP_REQUIRED":                    {"ITEM_ERROR", http.StatusBadRequest},
	"MFA_NOT_SUPPORTED":                      {"ITEM_ERROR", http.StatusBadRequest},
	"INVALID_UPDATED_USERNAME":               {"ITEM_ERROR", http.StatusBadRequest},
	"USER_INPUT_TIMEOUT":                     {"ITEM_ERROR", http.StatusBadRequest},
	"PASSWORD_RESET_REQUIRED":                {"ITEM_ERROR", http.StatusBadRequest},
	"ACCESS_NOT_GRANTED":                     {"ITEM_ERROR", http.StatusBadRequest},
	"NO_INVESTMENT_ACCOUNTS":                 {"ITEM_ERROR", http.StatusBadRequest},
	"NO_INVESTMENT_AUTH_ACCOUNTS":            {"ITEM_ERROR", http.StatusBadRequest},
	"NO_LIABILITY_ACCOUNTS":                  {"ITEM_ERROR", http.StatusBadRequest},
	"ITEM_NOT_SUPPORTED":                     {"ITEM_ERROR", http.StatusBadRequest},
	"ITEM_CONCURRENTLY_DELETED":              {"ITEM_ERROR", http.StatusBadRequest},
	"USER_PERMISSION_REVOKED":                {"ITEM_ERROR", http.StatusBadRequest},
	"USER_ACCOUNT_REVOKED":                   {"ITEM_ERROR", http.StatusBadRequest},
	"TRANSACTIONS_LIMIT":                     {"RATE_LIMIT_EXCEEDED", http.StatusTooManyRequests},
	"BALANCE_LIMIT":                          {"RATE_LIMIT_EXCEEDED", http.StatusTooManyRequests},
	"IDENTITY_LIMIT":                         {"RATE_LIMIT_EXCEEDED", http.StatusTooManyRequests},
	"ADDITION_LIMIT":                         {"RATE_LIMIT_EXCEEDED", http.StatusTooManyRequests},
	"INSTITUTION_NOT_ENABLED_IN_ENVIRONMENT": {"INVALID_INPUT", http.StatusBadRequest},
	"INSTITUTION_NOT_FOUND":                  {"INVALID_INPUT", http.StatusBadRequest},
	"INVALID_PRODUCT":                        {"INVALID_INPUT", http.StatusBadRequest},
	"INVALID_ACCOUNT_ID":                     {"INVALID_INPUT", http.StatusBadRequest},
	"PRODUCT_NOT_ENABLED":                    {"INVALID_REQUEST", http.StatusBadRequest},
	"INVALID_CONFIGURATION":                  {"INVALID_REQUEST", http.StatusBadRequest},
	"LAST_UPDATED_DATETIME_OUT_OF_RANGE":     {"INVALID_RESULT", http.StatusBadRequest},
	"OAUTH_REGISTRATION_ERROR":               {"OAUTH_ERROR", http.StatusBadRequest},
	"RECAPTCHA_REQUIRED":                     {"RECAPTCHA_ERROR", http.StatusBadRequest},
	"INVALID_OTP":                            {"ITEM_ERROR", http.StatusBadRequest},
	"INVALID_PHONE_NUMBER":                   {"ITEM_ERROR", http.StatusBadRequest},
	"INSTANT_MATCH_FAILED":                   {"ITEM_ERROR", http.StatusBadRequest},
	"INVALID_INSTITUTION":                    {"INVALID_INPUT", http.StatusBadRequest},
	"UNAUTHORIZED_ENVIRONMENT":               {"INVALID_INPUT", http.StatusBadRequest},
	"UNAUTHORIZED_ROUTE_ACCESS":              {"INVALID_INPUT", http.StatusBadRequest},
	"TOO_MANY_VERIFICATION_ATTEMPTS":         {"INVALID_INPUT", http.StatusBadRequest},
	"INCORRECT_DEPOSIT_VERIFICATION":         {"INVALID_INPUT", http.StatusBadRequest},
}

// ErrorCodes lists the error codes the server knows, with the type and
// status Plaid answers each with: the codes of Plaid's error reference
// that the endpoints kluis calls can answer, and those the spec's examples
// name.
func ErrorCodes() map[string]Fault {
	out := make(map[string]Fault, len(errorTable))
	for code := range errorTable {
		out[code] = faultFor(code)
	}
	return out
}

// faultFor is Plaid's answer for an error code; an unknown code is an
// API_ERROR with status 500.
func faultFor(code string) Fault {
	e, ok := errorTable[code]
	if !ok {
		e.typ, e.status = "API_ERROR", http.StatusInternalServerError
	}
	return Fault{Status: e.status, ErrorType: e.typ, ErrorCode: code}
}

// FailNext makes the next n calls of endpoint answer Plaid's error code
// (with the type and status Plaid uses for it).
func (s *Server) FailNext(endpoint string, n int, code string) {
	s.FailNextWith(endpoint, n, faultFor(code))
}

// FailNextWith makes the next n calls of endpoint answer f.
func (s *Server) FailNextWith(endpoint string, n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults[endpoint] = append(s.faults[endpoint], f)
	}
}

// PendingFaults says how many injected faults of endpoint are still unused.
func (s *Server) PendingFaults(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.faults[endpoint])
}

func (s *Server) popFault(endpoint string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.faults[endpoint]
	if len(q) == 0 {
		return Fault{}, false
	}
	s.faults[endpoint] = q[1:]
	return q[0], true
}

// answer renders f for a request to endpoint with body.
func (f Fault) answer(endpoint string, body []byte) answer {
	if f.Drop {
		return answer{drop: true}
	}
	status := f.Status
	if status == 0 {
		status = http.StatusInternalServerError
	}
	h := http.Header{}
	if f.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(f.RetryAfter))
	}
	if f.RawBody != nil {
		h.Set("Content-Type", "text/html")
		return answer{status: status, raw: f.RawBody, header: h}
	}
	msg := f.ErrorMessage
	if msg == "" {
		msg = "plaidtest: " + f.ErrorCode + " for " + endpoint
		if body != nil {
			msg += " with request " + string(body)
		}
	}
	a := plaidError(status, f.ErrorType, f.ErrorCode, msg)
	a.header = h
	return a
}

// plaidError is an answer in Plaid's error shape.
func plaidError(status int, typ, code, message string) answer {
	return answer{status: status, body: map[string]any{
		"error_type":      typ,
		"error_code":      code,
		"error_message":   message,
		"display_message": nil,
		"request_id":      requestID(),
	}}
}
