// Package client is the Go client of kluis for internal services and tools:
// the client oapi-codegen generates from the contract (package kluisapi,
// reachable as Client.API for every route) with what a service needs added
// by hand: mutual TLS from PEM files, the reveal routes with their purpose,
// an Idempotency-Key on every POST, retries only where the contract says a
// retry is safe, and errors as *Error carrying error.code and error.reason.
//
//	c, err := client.New(client.Config{
//		BaseURL: "https://kluis-internal:8081",
//		TLS:     &client.TLSFiles{CertFile: "svc.crt", KeyFile: "svc.key", CAFile: "kluis-ca.crt"},
//	})
//	tok, err := c.RevealItemToken(ctx, "itm_…", "payment_initiation")
//	if client.IsReason(err, "credential_revoked") { … }
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/kluis-dev/kluis/client/kluisapi"
)

// Config configures a Client.
type Config struct {
	// BaseURL is the listener's URL: the internal one (https, mutual TLS)
	// for services, or the public one.
	BaseURL string
	// TLS, if set, is the service's mutual-TLS identity, loaded from files.
	TLS *TLSFiles
	// HTTPClient, if set, is used as it is (its transport carries its own
	// TLS); TLS is then ignored.
	HTTPClient *http.Client
	// Timeout bounds each attempt (0: 15 s; kluis answers within its own
	// request deadline, 10 s by default).
	Timeout time.Duration
	// Retry is the retry policy (zero: the defaults of RetryPolicy).
	Retry RetryPolicy
	// BearerToken, if set, gives the Authorization token of each request:
	// a user token on the public listener, or a staff token for the
	// compliance routes.
	BearerToken func(ctx context.Context) (string, error)
}

// Client calls kluis. It is safe for concurrent use.
type Client struct {
	// API is the generated client, for every route of the contract; its
	// calls get the Idempotency-Key, retries and authentication too.
	API *kluisapi.ClientWithResponses
}

// New builds a Client.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		return nil, errors.New("kluis client: BaseURL is required")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if cfg.TLS != nil {
			tc, err := cfg.TLS.TLSConfig()
			if err != nil {
				return nil, err
			}
			tr.TLSClientConfig = tc
		}
		timeout := cfg.Timeout
		if timeout <= 0 {
			timeout = 15 * time.Second
		}
		hc = &http.Client{Transport: tr, Timeout: timeout}
	}
	opts := []kluisapi.ClientOption{kluisapi.WithHTTPClient(&doer{hc: hc, policy: cfg.Retry.withDefaults(), sleep: sleepCtx})}
	if cfg.BearerToken != nil {
		opts = append(opts, kluisapi.WithRequestEditorFn(func(ctx context.Context, req *http.Request) error {
			tok, err := cfg.BearerToken(ctx)
			if err != nil {
				return fmt.Errorf("kluis client: bearer token: %w", err)
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			return nil
		}))
	}
	api, err := kluisapi.NewClientWithResponses(cfg.BaseURL, opts...)
	if err != nil {
		return nil, err
	}
	return &Client{API: api}, nil
}

// Revealed is a revealed credential.
type Revealed struct {
	Ref  string
	Kind string // bank_access_token or account_number
	// Owner is the item or account the credential belongs to, as its
	// sealed record binds it: check it is the one you asked about.
	Owner  Owner
	Secret Secret
}

// Owner is what a credential belongs to.
type Owner struct {
	Type string // item or account
	ID   string
}

// Secret is a revealed secret: the fields of its kind are set. Its String
// hides it, so that logging a Revealed by accident does not leak it.
type Secret struct {
	// bank_access_token
	AccessToken string `json:"access_token"`
	Provider    string `json:"provider"`
	// account_number (US: routing number; South Africa: branch code and bank)
	AccountNumber string `json:"account_number"`
	RoutingNumber string `json:"routing_number"`
	BranchCode    string `json:"branch_code"`
	BankID        string `json:"bank_id"`
	// Tokenized: the provider gave a tokenized number (usable only for ACH
	// from the app that linked the account).
	Tokenized bool `json:"tokenized"`
}

// String hides the secret.
func (Secret) String() string { return "[secret]" }

// GoString hides the secret from %#v too.
func (Secret) GoString() string { return "client.Secret{[secret]}" }

// RevealCredential reveals the credential ref (a credential_ref or an
// account_number_ref) for purpose, which the service policy must allow.
func (c *Client) RevealCredential(ctx context.Context, ref, purpose string) (*Revealed, error) {
	r, err := c.API.RevealCredentialWithResponse(ctx, ref, nil, kluisapi.RevealCredentialJSONRequestBody{Purpose: purpose})
	if err != nil {
		return nil, err
	}
	return revealed(r.HTTPResponse, r.Body, r.JSON200)
}

// RevealAccountNumber reveals an account's number (kind account_number)
// in one round trip.
func (c *Client) RevealAccountNumber(ctx context.Context, accountID, purpose string) (*Revealed, error) {
	r, err := c.API.RevealAccountNumberWithResponse(ctx, accountID, nil, kluisapi.RevealAccountNumberJSONRequestBody{Purpose: purpose})
	if err != nil {
		return nil, err
	}
	return revealed(r.HTTPResponse, r.Body, r.JSON200)
}

// RevealItemToken reveals an item's access token (kind bank_access_token)
// in one round trip.
func (c *Client) RevealItemToken(ctx context.Context, itemID, purpose string) (*Revealed, error) {
	r, err := c.API.RevealItemTokenWithResponse(ctx, itemID, nil, kluisapi.RevealItemTokenJSONRequestBody{Purpose: purpose})
	if err != nil {
		return nil, err
	}
	return revealed(r.HTTPResponse, r.Body, r.JSON200)
}

// Item reads an item with its credential reference and its accounts'
// number references (never a secret).
func (c *Client) Item(ctx context.Context, id string) (*kluisapi.InternalItem, error) {
	r, err := c.API.GetInternalItemWithResponse(ctx, id)
	if err != nil {
		return nil, err
	}
	return okOr(r.HTTPResponse, r.Body, r.JSON200)
}

// Account reads an account with its number reference (never the number).
func (c *Client) Account(ctx context.Context, id string) (*kluisapi.InternalAccount, error) {
	r, err := c.API.GetInternalAccountWithResponse(ctx, id)
	if err != nil {
		return nil, err
	}
	return okOr(r.HTTPResponse, r.Body, r.JSON200)
}

// okOr returns v for a 200, or the answer as an *Error.
func okOr[T any](resp *http.Response, body []byte, v *T) (*T, error) {
	if resp.StatusCode == http.StatusOK && v != nil {
		return v, nil
	}
	return nil, errorFrom(resp, body)
}

func revealed(resp *http.Response, body []byte, v *kluisapi.RevealedCredential) (*Revealed, error) {
	v, err := okOr(resp, body, v)
	if err != nil {
		return nil, err
	}
	out := &Revealed{Ref: v.Ref, Kind: string(v.Kind), Owner: Owner{Type: string(v.Owner.Type), ID: v.Owner.Id}}
	raw, err := v.Secret.MarshalJSON()
	if err == nil {
		err = json.Unmarshal(raw, &out.Secret)
	}
	if err != nil {
		return nil, fmt.Errorf("kluis client: read the revealed secret: %w", err)
	}
	return out, nil
}
