package banklink

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink/accountnumber"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
)

// MACer computes keyed MACs under a named system key (vault.SystemKeys).
// The Service uses it for the public-token hash and seal key, the OAuth
// state and the pseudonymous client_user_id it shows providers, under the
// keys SystemKeys names (systemkeys.go).
type MACer interface {
	MAC(name string, parts ...[]byte) ([]byte, error)
}

// Options builds a Service. Every field but Clock, Logger and WebhookURL is
// required, and one of Providers and Provider.
type Options struct {
	DB      *postgres.DB
	Vault   *vault.Store
	Auditor *audit.Auditor
	// Providers are the configured bank providers (NewProviders); the
	// first is the default of a link session that names none.
	Providers Providers
	// Provider is shorthand for Providers with this one provider.
	Provider Provider
	Keys     MACer
	Clock    kluis.Clock
	Logger   *slog.Logger
	// WebhookURL is given to the provider in link tokens: where it should
	// send item events (https://…/webhooks/<provider>; a "{provider}" in
	// it is replaced by the provider's name). Empty: none.
	WebhookURL string
	// CallTimeouts bound the exchange's provider calls each on its own
	// (defaults DefaultCallTimeouts).
	CallTimeouts CallTimeouts
	// OrphanRevokeFor bounds how long a provider token kluis could not
	// store is retried at the provider (default DefaultOrphanRevokeFor).
	OrphanRevokeFor time.Duration
	// Notify, if set, is called after a transaction that enqueued events
	// commits (events.Worker.Wake), so that apps hear of them at once
	// rather than at the worker's next tick.
	Notify func()
	// BankVerificationDone, if set, is told of a provider webhook saying
	// the bank answered a bank account verification (provider, the
	// provider's id of it): verification completes it. An error makes the
	// webhook answer fail, and the provider deliver it again.
	BankVerificationDone func(ctx context.Context, provider, ref string) error
}

// Service is bank linking: link sessions, exchange, items, accounts,
// provider webhooks and access-token rotation. It holds no state of its own
// (Postgres does), so any number of instances can run. It is safe for
// concurrent use.
type Service struct {
	db    *postgres.DB
	vault *vault.Store
	audit *audit.Auditor
	// providers is the registry every call about an item or a session
	// looks its own provider up in.
	providers Providers
	keys      MACer
	clock     kluis.Clock
	log       *slog.Logger
	webhook   string
	timeouts  CallTimeouts
	// orphanRevokeFor: see Options.OrphanRevokeFor.
	orphanRevokeFor time.Duration
	notify          func()
	// bankVerificationDone: see Options.BankVerificationDone.
	bankVerificationDone func(ctx context.Context, provider, ref string) error
	// verifications hears providers' verification statuses
	// (SetAccountVerifications).
	verifications AccountVerifications
}

// New checks opts and returns a Service.
func New(opts Options) (*Service, error) {
	if opts.DB == nil || opts.Vault == nil || opts.Auditor == nil || opts.Keys == nil {
		return nil, errors.New("banklink: DB, Vault, Auditor, Providers and Keys are required")
	}
	providers := opts.Providers
	switch {
	case opts.Provider != nil && len(providers) > 0:
		return nil, errors.New("banklink: set Providers or Provider, not both")
	case opts.Provider != nil:
		providers = Providers{opts.Provider}
	}
	providers, err := NewProviders(providers...)
	if err != nil {
		return nil, err
	}
	s := &Service{db: opts.DB, vault: opts.Vault, audit: opts.Auditor, providers: providers, keys: opts.Keys,
		clock: opts.Clock, log: opts.Logger, webhook: opts.WebhookURL,
		orphanRevokeFor: opts.OrphanRevokeFor, notify: opts.Notify, bankVerificationDone: opts.BankVerificationDone}
	if s.orphanRevokeFor <= 0 {
		s.orphanRevokeFor = DefaultOrphanRevokeFor
	}
	s.timeouts = opts.CallTimeouts.withDefaults()
	if s.clock == nil {
		s.clock = kluis.SystemClock{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// inEventTx is db.InTx for a transaction that may enqueue events: once it
// commits, the event worker is woken.
func (s *Service) inEventTx(ctx context.Context, fn func(pgx.Tx) error) error {
	err := s.db.InTx(ctx, fn)
	if err == nil && s.notify != nil {
		s.notify()
	}
	return err
}

// ProviderNames lists the configured providers' names, the default first.
func (s *Service) ProviderNames() []string { return s.providers.Names() }

// Sandbox reports whether the sandbox is among the providers: its own
// routes exist only then.
func (s *Service) Sandbox() bool {
	_, ok := s.providers.Sandbox()
	return ok
}

// webhookURL is the webhook URL a provider's link tokens carry: a
// "{provider}" in the configured one names the provider.
func (s *Service) webhookURL(provider string) string {
	return strings.ReplaceAll(s.webhook, "{provider}", provider)
}

func (s *Service) now() time.Time { return s.clock.Now().UTC() }

// mac is a keyed MAC under the named system key with a label of its own.
func (s *Service) mac(key, label string, parts ...[]byte) ([]byte, error) {
	m, err := s.keys.MAC(key, append([][]byte{[]byte("kluis/banklink/" + label)}, parts...)...)
	if err != nil {
		return nil, kluis.Wrap(kluis.EUnavailable, "key store unavailable, try again later", errors.Join(kluis.ErrUnavailable, err))
	}
	return m, nil
}

// sameHash compares two hashes in constant time.
func sameHash(a, b []byte) bool { return len(a) > 0 && hmac.Equal(a, b) }

// accessToken opens the access token that the item's pointer ref names. A
// credential that is not the item's own (the pointer was made to point at
// another item's token) is refused as an integrity failure: kluis must never
// act at the provider with one user's token on another's behalf (unlinking
// A must not revoke B). The caller zeroes nothing: the token is a Go string
// from here on, kept only for the call.
func (s *Service) accessToken(ctx context.Context, itemID, ref string) (string, error) {
	if ref == "" {
		return "", kluis.Errorf(kluis.EConflict, "the item has no access token")
	}
	cred, err := s.vault.OpenOwned(ctx, vault.ItemOwner(itemID), ref)
	if err != nil {
		return "", err
	}
	defer cred.Zero()
	var sec struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(cred.Secret, &sec); err != nil || sec.AccessToken == "" {
		return "", kluis.Wrap(kluis.EInternal, "internal error", errors.New("banklink: access token credential is malformed"))
	}
	return sec.AccessToken, nil
}

// sealAccessToken seals an access token of the item, linked through
// provider, for the subject in tx.
func (s *Service) sealAccessToken(ctx context.Context, tx pgx.Tx, itemID, subjectID, provider, token string) (string, error) {
	secret, err := accessTokenSecret(provider, token)
	if err != nil {
		return "", err
	}
	defer clear(secret)
	return s.vault.Seal(ctx, tx, vault.ItemOwner(itemID), subjectID, KindAccessToken, secret, "")
}

// accessTokenSecret is the sealed form of an access token of provider (the
// item's own: reveal names it to the service that acts on the token); the
// caller clears it.
func accessTokenSecret(provider, token string) ([]byte, error) {
	return json.Marshal(struct {
		AccessToken string `json:"access_token"`
		Provider    string `json:"provider"`
	}{token, provider})
}

// sealNumbers seals the account's numbers for the subject in tx, with the
// blind index of the account number.
func (s *Service) sealNumbers(ctx context.Context, tx pgx.Tx, accountID, subjectID string, n AuthNumbers) (string, error) {
	secret, err := numbersSecret(n)
	if err != nil {
		return "", err
	}
	defer clear(secret)
	return s.vault.Seal(ctx, tx, vault.AccountOwner(accountID), subjectID, accountnumber.Kind, secret, n.AccountNumber)
}

// numbersSecret is the sealed form of an account's numbers: a US
// account's account and routing number, a South African one's account
// number, branch code and bank (the reveal answer of api/openapi.yaml).
func numbersSecret(n AuthNumbers) ([]byte, error) {
	if n.BankID != "" {
		return json.Marshal(struct {
			AccountNumber string `json:"account_number"`
			BranchCode    string `json:"branch_code"`
			BankID        string `json:"bank_id"`
		}{n.AccountNumber, n.BranchCode, n.BankID})
	}
	return json.Marshal(struct {
		AccountNumber string `json:"account_number"`
		RoutingNumber string `json:"routing_number"`
		// Tokenized tells the service revealing it that the number works
		// only for ACH from the app that linked the account.
		Tokenized bool `json:"tokenized,omitempty"`
	}{n.AccountNumber, n.RoutingNumber, n.Tokenized})
}

// appendAudit writes one audit entry in tx.
func (s *Service) appendAudit(ctx context.Context, tx pgx.Tx, a audit.Actor, action, target, externalSub string, details map[string]any) error {
	return s.audit.Append(ctx, tx, a.Entry(action, target, audit.OutcomeSuccess, externalSub, details))
}

// withAccounts fills in the items' live accounts.
func (s *Service) withAccounts(ctx context.Context, q querier, items []Item) error {
	if len(items) == 0 {
		return nil
	}
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.ID
	}
	accts, err := accountsOf(ctx, q, ids)
	if err != nil {
		return err
	}
	byItem := map[string][]Account{}
	for _, a := range accts {
		byItem[a.ItemID] = append(byItem[a.ItemID], a)
	}
	for i := range items {
		items[i].Accounts = byItem[items[i].ID]
		if items[i].Accounts == nil {
			items[i].Accounts = []Account{}
		}
	}
	return nil
}

// providerErr names the provider call that failed, keeping its code.
func providerErr(op string, err error) error { return fmt.Errorf("banklink: %s: %w", op, err) }
