// Package plaidtest is an in-process Plaid for tests: an httptest server
// that speaks Plaid's REST API (version 2020-09-14) for the endpoints kluis
// calls, with state: institutions, items, access tokens, single-use public
// tokens, link tokens, accounts with account and routing numbers, and
// webhook verification keys.
//
// Like Plaid it checks the PLAID-CLIENT-ID, PLAID-SECRET and Plaid-Version
// headers and answers errors in Plaid's shape ({"error_type", "error_code",
// "error_message", "display_message", "request_id"}). Its error messages
// echo the request body on purpose, as a trap for code that would pass
// them on.
//
// Knobs let a test inject an error for the next calls of an endpoint, lose
// the answer of a call that did its work, add latency, count calls, put an item into ITEM_LOGIN_REQUIRED, take an
// institution down, rotate and expire webhook keys, fire signed webhooks
// (and forged ones), and check every request and answer against Plaid's
// OpenAPI description (ValidateAgainst), failing the test on a violation.
// CreatePublicToken does what Plaid's /sandbox/public_token/create does, so
// a test can complete a link flow.
//
// A test of another package drives the real adapter against it:
//
//	srv := plaidtest.NewServer(t, plaidtest.WithSpec(plaidtest.LoadSpec(t)))
//	p, _ := plaid.New(plaid.Options{ClientID: srv.ClientID, Secret: srv.Secret, BaseURL: srv.URL})
//	public, _ := srv.CreatePublicToken(plaidtest.InstitutionAuth)
//	ex, _ := p.ExchangePublicToken(ctx, public)
//	wh := srv.LoginRequiredWebhook(ex.ProviderItemID)
//	req, _ := wh.Request(ctx, kluisURL+"/webhooks/plaid") // signed as Plaid signs
package plaidtest

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
)

// The endpoints the server implements.
//
// #nosec G101 -- URL paths named after Plaid's endpoints, not credentials
const (
	EndpointLinkTokenCreate       = "/link/token/create"
	EndpointPublicTokenExchange   = "/item/public_token/exchange"
	EndpointAccountsGet           = "/accounts/get"
	EndpointAuthGet               = "/auth/get"
	EndpointItemRemove            = "/item/remove"
	EndpointAccessTokenInvalidate = "/item/access_token/invalidate"
	EndpointWebhookKeyGet         = "/webhook_verification_key/get"
	EndpointItemWebhookUpdate     = "/item/webhook/update"
)

// APIVersion is the only Plaid-Version the server accepts.
const APIVersion = "2020-09-14"

// The API keys the server accepts (Server.ClientID and Server.Secret).
// The secret is distinctive so that a canary scan can look for it.
const (
	ClientID = "plaidtest-client-id-0001"
	Secret   = "plaidtest-secret-CANARY-7f3a9c"
)

// Institutions every server has, named as in Plaid's sandbox.
const (
	// InstitutionAuth has a checking and a savings account with ACH numbers.
	InstitutionAuth = "ins_109508"
	// InstitutionNoAuth has accounts but no auth: /auth/get answers
	// PRODUCTS_NOT_SUPPORTED.
	InstitutionNoAuth = "ins_109509"
	// InstitutionDown answers INSTITUTION_DOWN to every item call.
	InstitutionDown = "ins_109510"
)

// Lifetimes of tokens, as in Plaid.
const (
	LinkTokenTTL       = 4 * time.Hour
	UpdateLinkTokenTTL = 30 * time.Minute
	PublicTokenTTL     = 30 * time.Minute
)

// Institution is a bank of the fake.
type Institution struct {
	ID   string
	Name string
	// Auth says whether /auth/get gives numbers for its items.
	Auth bool
	// Down makes every item call answer INSTITUTION_DOWN.
	Down bool
	// Tokenized makes its accounts' numbers tokenized
	// (is_tokenized_account_number), as Chase's and PNC's are.
	Tokenized bool
	// VerificationStatus is given to its new accounts (Plaid's
	// verification_status, e.g. pending_manual_verification); empty: none,
	// as for instant auth.
	VerificationStatus string
	// AutomatedMicrodeposits: an institution without Auth where Plaid's
	// Automated Micro-deposits work (a link token that enables them gets
	// an item pending_automatic_verification); without it, a link token
	// enabling Same Day Micro-deposits gets one pending_manual_verification.
	AutomatedMicrodeposits bool
}

// Account is one account of an item, with its full numbers.
type Account struct {
	ID      string
	Name    string
	Mask    string
	Type    string
	Subtype string
	Number  string
	Routing string
	// Tokenized and VerificationStatus are Auth's facts about the account.
	Tokenized          bool
	VerificationStatus string
}

// Item is the state of one item.
type Item struct {
	ID            string
	InstitutionID string
	AccessToken   string
	Webhook       string
	LoginRequired bool
	Accounts      []Account
	// MicroDeposits names the Plaid micro-deposit flow the item was made
	// by (FlowSameDay, FlowAutomated), or "" for a login with Auth.
	MicroDeposits string
	// attemptsLeft are the Same Day code attempts left (3 at first).
	attemptsLeft int
}

type publicToken struct {
	institutionID string
	webhook       string
	expires       time.Time
	auth          linkAuth
}

type linkToken struct {
	clientUserID string
	webhook      string
	accessToken  string
	expires      time.Time
	auth         linkAuth
}

// Server is a fake Plaid. Create it with NewServer; it closes with the test.
type Server struct {
	// URL is the base URL to give the adapter.
	URL string
	// ClientID and Secret are the API keys it accepts.
	ClientID string
	Secret   string

	t     testing.TB
	srv   *httptest.Server
	clock kluis.Clock

	mu           sync.Mutex
	spec         *Spec
	institutions map[string]*Institution
	items        map[string]*Item
	accessTokens map[string]string // token → item id
	publicTokens map[string]*publicToken
	linkTokens   map[string]*linkToken
	faults       map[string][]Fault
	lost         map[string]int
	latency      map[string]time.Duration
	calls        map[string]int
	validated    map[string]int
	keys         map[string]*signingKey
	currentKid   string
	linkRequests []map[string]any

	done     chan struct{}
	doneOnce sync.Once
}

// Option configures a Server.
type Option func(*Server)

// WithClock makes the server tell time by c: token expiry and the iat of
// the webhooks it signs.
func WithClock(c kluis.Clock) Option { return func(s *Server) { s.clock = c } }

// WithSpec validates every request and answer against spec from the start
// (see ValidateAgainst).
func WithSpec(spec *Spec) Option { return func(s *Server) { s.spec = spec } }

// NewServer starts a fake Plaid on 127.0.0.1 that closes when the test ends.
func NewServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{
		ClientID: ClientID,
		Secret:   Secret,
		t:        t,
		clock:    kluis.SystemClock{},
		institutions: map[string]*Institution{
			InstitutionAuth:   {ID: InstitutionAuth, Name: "First Platypus Bank", Auth: true},
			InstitutionNoAuth: {ID: InstitutionNoAuth, Name: "First Gingham Credit Union"},
			InstitutionDown:   {ID: InstitutionDown, Name: "Tattersall Federal Credit Union", Auth: true, Down: true},
		},
		items:        map[string]*Item{},
		accessTokens: map[string]string{},
		publicTokens: map[string]*publicToken{},
		linkTokens:   map[string]*linkToken{},
		faults:       map[string][]Fault{},
		lost:         map[string]int{},
		latency:      map[string]time.Duration{},
		calls:        map[string]int{},
		validated:    map[string]int{},
		keys:         map[string]*signingKey{},
		done:         make(chan struct{}),
	}
	for _, opt := range opts {
		opt(s)
	}
	s.RotateKey()
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	// Runs before srv.Close, which waits for handlers still delaying.
	t.Cleanup(s.stopDelays)
	return s
}

// Close stops the server now; later calls get connection errors.
func (s *Server) Close() {
	s.stopDelays()
	s.srv.Close()
}

func (s *Server) stopDelays() { s.doneOnce.Do(func() { close(s.done) }) }

// ValidateAgainst checks every later request and answer against spec; a
// violation fails the test (t.Errorf) and the request is answered with
// INVALID_REQUEST.
func (s *Server) ValidateAgainst(spec *Spec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spec = spec
}

// Calls returns how many requests reached endpoint, refused ones included.
func (s *Server) Calls(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[endpoint]
}

// Validated returns how many requests to endpoint were checked against
// the spec, so a test can show that the check ran.
func (s *Server) Validated(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.validated[endpoint]
}

// SetLatency delays every answer of endpoint by d (the request's context
// still ends it).
func (s *Server) SetLatency(endpoint string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency[endpoint] = d
}

// AddInstitution adds or replaces an institution.
func (s *Server) AddInstitution(inst Institution) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.institutions[inst.ID] = &inst
}

// SetInstitutionDown takes an institution down or brings it back.
func (s *Server) SetInstitutionDown(id string, down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if inst, ok := s.institutions[id]; ok {
		inst.Down = down
	}
}

// SetLoginRequired puts an item into ITEM_LOGIN_REQUIRED (or repairs it).
func (s *Server) SetLoginRequired(itemID string, required bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if it, ok := s.items[itemID]; ok {
		it.LoginRequired = required
	}
}

// Item returns a copy of an item's state.
func (s *Server) Item(itemID string) (Item, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.items[itemID]
	if !ok {
		return Item{}, false
	}
	c := *it
	c.Accounts = append([]Account(nil), it.Accounts...)
	return c, true
}

// ItemByAccessToken returns the item an access token opens, if it is live.
func (s *Server) ItemByAccessToken(token string) (Item, bool) {
	s.mu.Lock()
	id, ok := s.accessTokens[token]
	s.mu.Unlock()
	if !ok {
		return Item{}, false
	}
	return s.Item(id)
}

// CreatePublicToken does what Plaid's /sandbox/public_token/create does: it
// returns a public token for a new item at the institution, as if a user
// had finished Link there. It is single-use and expires in 30 minutes.
func (s *Server) CreatePublicToken(institutionID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.institutions[institutionID]; !ok {
		return "", fmt.Errorf("plaidtest: no institution %q", institutionID)
	}
	tok := "public-sandbox-" + uuid()
	s.publicTokens[tok] = &publicToken{institutionID: institutionID, expires: s.clock.Now().Add(PublicTokenTTL)}
	return tok, nil
}

// CompleteLink plays the user finishing Link with a link token. For a new
// link it returns a public token for an item at the institution, with the
// link token's webhook; in update mode it repairs the item's login and
// returns "" (Plaid gives no new public token then).
func (s *Server) CompleteLink(linkTok, institutionID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lt, ok := s.linkTokens[linkTok]
	if !ok || s.clock.Now().After(lt.expires) {
		return "", fmt.Errorf("plaidtest: link token unknown or expired")
	}
	if lt.accessToken != "" {
		id, ok := s.accessTokens[lt.accessToken]
		if !ok {
			return "", fmt.Errorf("plaidtest: the update-mode item is gone")
		}
		s.items[id].LoginRequired = false
		return "", nil
	}
	if _, ok := s.institutions[institutionID]; !ok {
		return "", fmt.Errorf("plaidtest: no institution %q", institutionID)
	}
	tok := "public-sandbox-" + uuid()
	s.publicTokens[tok] = &publicToken{institutionID: institutionID, webhook: lt.webhook, expires: s.clock.Now().Add(PublicTokenTTL), auth: lt.auth}
	return tok, nil
}

// maxBody caps what the server reads of a request.
const maxBody = 1 << 20

// answer is a status and a JSON value to send.
type answer struct {
	status int
	body   any
	header http.Header
	raw    []byte // sent as is when set
	drop   bool   // close the connection without answering
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	s.mu.Lock()
	s.calls[path]++
	delay := s.latency[path]
	spec := s.spec
	s.mu.Unlock()
	// The body is read before any delay: only then does the server notice
	// a client that gave up.
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		s.write(w, r, nil, path, plaidError(http.StatusBadRequest, "INVALID_REQUEST", "INVALID_BODY", "body unreadable or too large"))
		return
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		}
	}
	a := s.handle(r, spec, path, body)
	s.mu.Lock()
	if s.lost[path] > 0 && a.status == http.StatusOK {
		// The endpoint did its work; its answer never arrives.
		s.lost[path]--
		a = answer{drop: true}
	}
	s.mu.Unlock()
	s.write(w, r, spec, path, a)
}

// LoseAnswerNext makes the next n successful calls of endpoint do their
// work (a rotation invalidates the old token, a removal removes) and then
// close the connection without answering: an answer lost on the way.
func (s *Server) LoseAnswerNext(endpoint string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lost[endpoint] += n
}

// LiveTokens lists the access tokens that open the item now (none once
// it is removed).
func (s *Server) LiveTokens(itemID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for tok, id := range s.accessTokens {
		if id == itemID {
			out = append(out, tok)
		}
	}
	return out
}

// handle checks the request and runs the endpoint.
func (s *Server) handle(r *http.Request, spec *Spec, path string, body []byte) answer {
	handler, ok := s.handlers()[path]
	if !ok || r.Method != http.MethodPost {
		return plaidError(http.StatusNotFound, "INVALID_REQUEST", "NOT_FOUND", "unknown endpoint "+path)
	}
	if spec != nil {
		s.mu.Lock()
		s.validated[path]++
		s.mu.Unlock()
		if v := spec.ValidateRequest(r, path, body); len(v) > 0 {
			for _, msg := range v {
				s.t.Errorf("plaidtest: spec violation: %s", shorten(msg))
			}
			return plaidError(http.StatusBadRequest, "INVALID_REQUEST", "INVALID_FIELD", "request does not match the spec")
		}
	}
	if a, ok := s.checkHeaders(r, body); !ok {
		return a
	}
	if f, ok := s.popFault(path); ok {
		return f.answer(path, body)
	}
	var req map[string]any
	if err := json.Unmarshal(body, &req); err != nil {
		return plaidError(http.StatusBadRequest, "INVALID_REQUEST", "INVALID_BODY", "body is not a JSON object")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return handler(req)
}

// checkHeaders does what Plaid does with the headers, and refuses API keys
// in the body: kluis sends them only in headers.
func (s *Server) checkHeaders(r *http.Request, body []byte) (answer, bool) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return plaidError(http.StatusBadRequest, "INVALID_REQUEST", "INVALID_HEADERS", "Content-Type must be application/json"), false
	}
	if v := r.Header.Get("Plaid-Version"); v != APIVersion {
		return plaidError(http.StatusBadRequest, "INVALID_REQUEST", "INVALID_HEADERS", "unsupported Plaid-Version"), false
	}
	var creds struct {
		ClientID *string `json:"client_id"`
		Secret   *string `json:"secret"`
	}
	if json.Unmarshal(body, &creds) == nil && (creds.ClientID != nil || creds.Secret != nil) {
		s.t.Errorf("plaidtest: API keys sent in the body of %s", r.URL.Path)
		return plaidError(http.StatusBadRequest, "INVALID_REQUEST", "INVALID_FIELD", "API keys belong in headers"), false
	}
	if r.Header.Get("PLAID-CLIENT-ID") != s.ClientID || r.Header.Get("PLAID-SECRET") != s.Secret {
		return plaidError(http.StatusBadRequest, "INVALID_INPUT", "INVALID_API_KEYS", "invalid client_id or secret provided"), false
	}
	return answer{}, true
}

// write sends a, and checks it against spec first.
func (s *Server) write(w http.ResponseWriter, r *http.Request, spec *Spec, path string, a answer) {
	if a.drop {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	raw := a.raw
	if raw == nil {
		var err error
		if raw, err = json.Marshal(a.body); err != nil {
			s.t.Errorf("plaidtest: encode answer: %v", err)
			return
		}
	}
	h := w.Header()
	for k, v := range a.header {
		h[k] = v
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	if spec != nil && a.raw == nil && a.status != http.StatusNotFound {
		for _, msg := range spec.ValidateResponse(r, path, a.status, h, raw) {
			s.t.Errorf("plaidtest: answer violates the spec: %s", shorten(msg))
		}
	}
	w.WriteHeader(a.status)
	_, _ = w.Write(raw)
}

// handlers maps each endpoint to its implementation; they run under s.mu.
func (s *Server) handlers() map[string]func(map[string]any) answer {
	return map[string]func(map[string]any) answer{
		EndpointLinkTokenCreate:       s.linkTokenCreate,
		EndpointPublicTokenExchange:   s.publicTokenExchange,
		EndpointAccountsGet:           s.accountsGet,
		EndpointAuthGet:               s.authGet,
		EndpointItemRemove:            s.itemRemove,
		EndpointAccessTokenInvalidate: s.accessTokenInvalidate,
		EndpointWebhookKeyGet:         s.webhookKeyGet,
		EndpointItemWebhookUpdate:     s.itemWebhookUpdate,
	}
}

func ok(body map[string]any) answer {
	body["request_id"] = requestID()
	return answer{status: http.StatusOK, body: body}
}

func str(req map[string]any, key string) string {
	v, _ := req[key].(string)
	return v
}

func (s *Server) linkTokenCreate(req map[string]any) answer {
	user, _ := req["user"].(map[string]any)
	clientUserID := str(user, "client_user_id")
	if clientUserID == "" || str(req, "client_name") == "" || str(req, "language") == "" {
		return plaidError(http.StatusBadRequest, "INVALID_REQUEST", "MISSING_FIELDS", "the following required fields are missing: user.client_user_id, client_name or language")
	}
	ttl := LinkTokenTTL
	access := str(req, "access_token")
	if access != "" {
		if _, ok := s.accessTokens[access]; !ok {
			return faultFor("INVALID_ACCESS_TOKEN").answer(EndpointLinkTokenCreate, nil)
		}
		ttl = UpdateLinkTokenTTL
	} else if products, _ := req["products"].([]any); len(products) == 0 {
		return plaidError(http.StatusBadRequest, "INVALID_REQUEST", "MISSING_FIELDS", "the following required fields are missing: products")
	}
	if a, refused := s.checkLinkRequest(req); refused {
		return a
	}
	tok := "link-sandbox-" + uuid()
	expires := s.clock.Now().Add(ttl).UTC().Truncate(time.Second)
	s.linkTokens[tok] = &linkToken{clientUserID: clientUserID, webhook: str(req, "webhook"), accessToken: access, expires: expires,
		auth: linkAuthOf(req)}
	return ok(map[string]any{"link_token": tok, "expiration": expires.Format(time.RFC3339)})
}

func (s *Server) publicTokenExchange(req map[string]any) answer {
	tok := str(req, "public_token")
	pt, found := s.publicTokens[tok]
	if !found || s.clock.Now().After(pt.expires) {
		return faultFor("INVALID_PUBLIC_TOKEN").answer(EndpointPublicTokenExchange, nil)
	}
	delete(s.publicTokens, tok) // single use
	it := s.newItem(pt.institutionID, pt.webhook)
	s.microDepositItem(it, pt.auth)
	return ok(map[string]any{"access_token": it.AccessToken, "item_id": it.ID})
}

// newItem creates an item with two accounts at the institution.
func (s *Server) newItem(institutionID, webhook string) *Item {
	it := &Item{
		ID:            randomString(37),
		InstitutionID: institutionID,
		AccessToken:   "access-sandbox-" + uuid(),
		Webhook:       webhook,
		Accounts: []Account{
			newAccount("Plaid Checking", "checking"),
			newAccount("Plaid Saving", "savings"),
		},
	}
	if inst, ok := s.institutions[institutionID]; ok {
		for i := range it.Accounts {
			it.Accounts[i].Tokenized, it.Accounts[i].VerificationStatus = inst.Tokenized, inst.VerificationStatus
		}
	}
	s.items[it.ID] = it
	s.accessTokens[it.AccessToken] = it.ID
	return it
}

func newAccount(name, subtype string) Account {
	number := randomDigits(12)
	return Account{
		ID:      randomString(37),
		Name:    name,
		Mask:    number[len(number)-4:],
		Type:    "depository",
		Subtype: subtype,
		Number:  number,
		Routing: "011401533",
	}
}

// liveItem finds the item of the request's access token and refuses it as
// Plaid would: unknown token, institution down, login required.
func (s *Server) liveItem(req map[string]any, endpoint string) (*Item, *Institution, answer, bool) {
	id, found := s.accessTokens[str(req, "access_token")]
	if !found {
		return nil, nil, faultFor("INVALID_ACCESS_TOKEN").answer(endpoint, nil), false
	}
	it := s.items[id]
	inst := s.institutions[it.InstitutionID]
	if inst.Down {
		return nil, nil, faultFor("INSTITUTION_DOWN").answer(endpoint, nil), false
	}
	if it.LoginRequired {
		return nil, nil, faultFor("ITEM_LOGIN_REQUIRED").answer(endpoint, nil), false
	}
	return it, inst, answer{}, true
}

func (s *Server) accountsGet(req map[string]any) answer {
	it, inst, refusal, found := s.liveItem(req, EndpointAccountsGet)
	if !found {
		return refusal
	}
	return ok(map[string]any{"accounts": accountsJSON(it), "item": itemJSON(it, inst)})
}

func (s *Server) authGet(req map[string]any) answer {
	it, inst, refusal, found := s.liveItem(req, EndpointAuthGet)
	if !found {
		return refusal
	}
	if !inst.Auth && it.MicroDeposits == "" {
		return faultFor("PRODUCTS_NOT_SUPPORTED").answer(EndpointAuthGet, nil)
	}
	ach := make([]any, 0, len(it.Accounts))
	for _, a := range it.Accounts {
		ach = append(ach, map[string]any{"account_id": a.ID, "account": a.Number, "routing": a.Routing, "wire_routing": a.Routing,
			"is_tokenized_account_number": a.Tokenized})
	}
	return ok(map[string]any{
		"accounts": accountsJSON(it),
		"numbers":  map[string]any{"ach": ach, "eft": []any{}, "international": []any{}, "bacs": []any{}},
		"item":     itemJSON(it, inst),
	})
}

func accountsJSON(it *Item) []any {
	out := make([]any, 0, len(it.Accounts))
	for _, a := range it.Accounts {
		acct := map[string]any{
			"account_id":    a.ID,
			"balances":      map[string]any{"available": 100.0, "current": 110.0, "limit": nil, "iso_currency_code": "USD", "unofficial_currency_code": nil},
			"mask":          a.Mask,
			"name":          a.Name,
			"official_name": "Plaid " + a.Subtype,
			"type":          a.Type,
			"subtype":       a.Subtype,
		}
		if a.VerificationStatus != "" {
			acct["verification_status"] = a.VerificationStatus
		}
		out = append(out, acct)
	}
	return out
}

func itemJSON(it *Item, inst *Institution) map[string]any {
	var webhook any
	if it.Webhook != "" {
		webhook = it.Webhook
	}
	products := []any{"auth"}
	if !inst.Auth && it.MicroDeposits == "" {
		products = []any{"transactions"}
	}
	return map[string]any{
		"item_id":                 it.ID,
		"institution_id":          inst.ID,
		"institution_name":        inst.Name,
		"webhook":                 webhook,
		"error":                   nil,
		"available_products":      []any{"balance"},
		"billed_products":         products,
		"consent_expiration_time": nil,
		"update_type":             "background",
	}
}

func (s *Server) itemRemove(req map[string]any) answer {
	tok := str(req, "access_token")
	id, found := s.accessTokens[tok]
	if !found {
		return faultFor("INVALID_ACCESS_TOKEN").answer(EndpointItemRemove, nil)
	}
	delete(s.accessTokens, tok)
	delete(s.items, id)
	return ok(map[string]any{})
}

func (s *Server) accessTokenInvalidate(req map[string]any) answer {
	tok := str(req, "access_token")
	id, found := s.accessTokens[tok]
	if !found {
		return faultFor("INVALID_ACCESS_TOKEN").answer(EndpointAccessTokenInvalidate, nil)
	}
	fresh := "access-sandbox-" + uuid()
	delete(s.accessTokens, tok) // the old token dies at once
	s.accessTokens[fresh] = id
	s.items[id].AccessToken = fresh
	return ok(map[string]any{"new_access_token": fresh})
}

func (s *Server) webhookKeyGet(req map[string]any) answer {
	k, found := s.keys[str(req, "key_id")]
	if !found {
		return faultFor("INVALID_WEBHOOK_VERIFICATION_KEY_ID").answer(EndpointWebhookKeyGet, nil)
	}
	return ok(map[string]any{"key": k.jwk()})
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func randomString(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alnum[randInt(len(alnum))]
	}
	return string(b)
}

func randomDigits(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('0' + randInt(10))
	}
	if b[0] == '0' {
		b[0] = '7'
	}
	return string(b)
}

func randInt(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		panic(err)
	}
	return int(v.Int64())
}

func uuid() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func requestID() string { return randomString(15) }

// AddAccount gives the item one more account, as a user who opens a new
// account at the bank (or shares one in update mode) does; Plaid then
// announces it with NEW_ACCOUNTS_AVAILABLE. It returns the account's id.
func (s *Server) AddAccount(itemID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.items[itemID]
	if !ok {
		return ""
	}
	a := newAccount("Plaid Money Market", "money market")
	it.Accounts = append(it.Accounts, a)
	return a.ID
}
