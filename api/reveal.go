package api

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/reveal"
)

// Every route that answers a secret, by method and route template. They are
// one operation: they share the reveal's rate limit (OpReveal), and none of
// their answers is ever stored for an Idempotency-Key replay.
var revealRoutes = map[string]bool{
	OpReveal:                                true,
	"POST /internal/v1/accounts/:id/reveal": true,
	"POST /internal/v1/items/:id/reveal":    true,
}

// operationOf names the request's operation ("METHOD /route/template"), the
// three reveal routes all as OpReveal.
func operationOf(c echo.Context) string {
	op := c.Request().Method + " " + c.Path()
	if revealRoutes[op] {
		return OpReveal
	}
	return op
}

// revealRequest is the body of a reveal: why the service needs the secret.
type revealRequest struct {
	Purpose string `json:"purpose"`
}

// ownerJSON names the item or account a revealed credential belongs to.
type ownerJSON struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// revealResponse carries the secret: {"access_token", "provider"} for a
// bank_access_token, {"account_number", "routing_number"} for an
// account_number ({"account_number", "branch_code", "bank_id"} for a South
// African manual account's), and the owner the record is bound to, so that a
// service that followed a pointer can tell whether it got what it asked for.
type revealResponse struct {
	Ref    string          `json:"ref"`
	Kind   string          `json:"kind"`
	Owner  ownerJSON       `json:"owner"`
	Secret json.RawMessage `json:"secret"`
}

// reveal decrypts a credential for an internal service whose policy allows
// its kind and the purpose given.
func (d *Deps) reveal(c echo.Context) error {
	return d.revealFor(c, reveal.Request{Via: reveal.ViaCredential, Ref: c.Param("ref")})
}

// revealAccount reveals the numbers of an account, in one round trip.
func (d *Deps) revealAccount(c echo.Context) error {
	return d.revealFor(c, reveal.Request{Via: reveal.ViaAccount, Owner: vault.AccountOwner(c.Param("id"))})
}

// revealItem reveals the access token of an item, in one round trip.
func (d *Deps) revealItem(c echo.Context) error {
	return d.revealFor(c, reveal.Request{Via: reveal.ViaItem, Owner: vault.ItemOwner(c.Param("id"))})
}

// revealFor decodes the request, runs the vault's reveal use case
// (vault/reveal: policy, integrity, open, audit committed before the
// secret leaves) and encodes its answer. An integrity failure is counted
// in kluis_reveal_integrity_failures_total by the route's way.
func (d *Deps) revealFor(c echo.Context, r reveal.Request) error {
	var req revealRequest
	if err := DecodeJSON(c, &req); err != nil {
		return err
	}
	if !namePattern.MatchString(req.Purpose) {
		return kluis.Errorf(kluis.EInvalid, "purpose is required: a name of up to 128 letters, digits, '.', '_', '/' or '-'")
	}
	r.Service, r.Purpose, r.RequestID = serviceName(c), req.Purpose, requestID(c)
	out, err := d.Reveal.Reveal(c.Request().Context(), r)
	if err != nil {
		if kluis.ErrorCode(err) == vault.EIntegrity {
			d.metrics.revealIntegrity.WithLabelValues(r.Via).Inc()
		}
		return err
	}
	defer clear(out.Secret)
	// The body is encoded here, so that the secret's only other copy is the
	// one cleared above, and written with no-store (set for every answer).
	body, err := json.Marshal(revealResponse{Ref: out.Ref, Kind: out.Kind,
		Owner: ownerJSON{Type: out.Owner.Type, ID: out.Owner.ID}, Secret: out.Secret})
	if err != nil {
		return err
	}
	defer clear(body)
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, body)
}

// newReveal builds the reveal use case over Deps' parts, for a Deps built
// without one (tests), as cmd/kluis wires it: the service policy, bank
// linking's pointers and usable secrets, and the audit writer's group
// commit (which runs no goroutine, so there is nothing to stop).
func (d *Deps) newReveal() *reveal.Service {
	// A nil *Policy allows nothing, so it is a policy too.
	opts := reveal.Options{Records: d.Vault, Policy: d.Policy, Logger: d.Logger}
	if d.Auditor != nil {
		opts.Audit = audit.NewGroup(d.Auditor, audit.GroupOptions{})
	}
	if d.BankLink != nil {
		opts.Pointers = d.BankLink
		opts.Secrets = BankSecrets(d.BankLink)
	}
	return reveal.New(opts)
}

// BankSecrets is bank linking's usable secret for a revealed credential
// (banklink.Service.ServiceCredential: a Stitch token renewed near its
// expiry), as the reveal use case's Secrets port.
func BankSecrets(b *banklink.Service) reveal.Secrets {
	return reveal.SecretsFunc(func(ctx context.Context, cred vault.Credential) ([]byte, error) {
		ss, err := b.ServiceCredential(ctx, cred)
		if err != nil {
			return nil, err
		}
		return ss.Secret, nil
	})
}
