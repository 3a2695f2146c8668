package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/accountnumber"
	"github.com/kluis-dev/kluis/vault"
)

// The three ways to name what to reveal: the metric's route label and the
// audit entry's "via".
const (
	revealViaCredential = "credential"
	revealViaAccount    = "account"
	revealViaItem       = "item"
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

// revealTarget is what a reveal names: a credential by its ref, or an owner
// whose pointer leads to one.
type revealTarget struct {
	via   string
	ref   string      // the credential route's ref
	owner vault.Owner // the owner routes' owner
}

// reveal decrypts a credential for an internal service whose policy allows
// its kind and the purpose given.
func (d *Deps) reveal(c echo.Context) error {
	return d.revealFor(c, revealTarget{via: revealViaCredential, ref: c.Param("ref")})
}

// revealAccount reveals the numbers of an account, in one round trip.
func (d *Deps) revealAccount(c echo.Context) error {
	return d.revealFor(c, revealTarget{via: revealViaAccount, owner: vault.AccountOwner(c.Param("id"))})
}

// revealItem reveals the access token of an item, in one round trip.
func (d *Deps) revealItem(c echo.Context) error {
	return d.revealFor(c, revealTarget{via: revealViaItem, owner: vault.ItemOwner(c.Param("id"))})
}

// revealFor reveals what t names. Every reveal, allowed or refused, is
// audited, and the secret leaves only after its audit entry is committed: if
// the audit log cannot take the entry, the answer is 503 and no secret. A
// credential that is not its pointer's owner's is 500 integrity, audited and
// counted, and its secret never leaves.
func (d *Deps) revealFor(c echo.Context, t revealTarget) error {
	ctx := c.Request().Context()
	svc := serviceName(c)
	var req revealRequest
	if err := DecodeJSON(c, &req); err != nil {
		return err
	}
	if !namePattern.MatchString(req.Purpose) {
		return kluis.Errorf(kluis.EInvalid, "purpose is required: a name of up to 128 letters, digits, '.', '_', '/' or '-'")
	}
	entry := audit.Entry{
		ActorKind: audit.ActorService, Actor: svc, Action: "credential.reveal",
		RequestID: requestID(c), Details: map[string]any{"purpose": req.Purpose, "via": t.via},
	}
	ref := t.ref
	if t.via != revealViaCredential {
		entry.Details["kind"] = kindOwnedBy(t.owner)
		if t.owner.Valid() {
			// Only a well-formed id is worth keeping: the rest is the caller's noise.
			entry.Details["owner"] = t.owner.String()
		}
		var err error
		if ref, err = d.followPointer(c, entry, t, req.Purpose); err != nil {
			return err
		}
	}
	info, err := d.Vault.Describe(ctx, ref)
	if err != nil {
		if kluis.ErrorCode(err) == kluis.ENotFound {
			return d.refuseReveal(c, entry, "", "not found", kluis.Errorf(kluis.ENotFound, "not found"))
		}
		return err
	}
	entry.Target, entry.Subject = info.Ref, info.ExternalSubjectID
	entry.Details["kind"] = info.Kind
	if t.via != revealViaCredential && info.Owner != t.owner {
		return d.integrityFailure(c, entry, t, info.Owner,
			fmt.Errorf("api: %s points at credential %s of %s", t.owner, ref, info.Owner))
	}
	if !d.Policy.MayReveal(svc, info.Kind, req.Purpose) {
		return d.refuseReveal(c, entry, info.Ref, "the policy does not allow this kind or purpose",
			kluis.Errorf(kluis.EForbidden, "this service may not reveal this credential for this purpose"))
	}
	entry.Details["app"] = info.App
	if !d.Policy.MayRevealApp(svc, info.App) {
		return d.refuseReveal(c, entry, info.Ref, "the policy does not allow this app",
			kluis.Errorf(kluis.EForbidden, "this service may not reveal this credential for this purpose"))
	}
	cred, err := d.openFor(ctx, t, ref)
	if err != nil {
		return d.failedOpen(c, entry, t, info.Owner, err)
	}
	defer cred.Zero()
	secret, err := d.serviceSecret(ctx, cred)
	if err != nil {
		return err
	}
	defer clear(secret)
	entry.Details["owner"] = cred.Owner.String()
	entry.Outcome = audit.OutcomeSuccess
	if err := d.Auditor.Record(ctx, entry); err != nil {
		return err
	}
	// The body is encoded here, so that the secret's only other copy is the
	// zeroed one above, and written with no-store (set for every answer).
	body, err := json.Marshal(revealResponse{Ref: cred.Ref, Kind: cred.Kind,
		Owner: ownerJSON{Type: cred.Owner.Type, ID: cred.Owner.ID}, Secret: secret})
	if err != nil {
		return err
	}
	defer clear(body)
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, body)
}

// serviceSecret is the secret a service gets for cred: an access token
// whose provider's tokens expire (Stitch) is the usable token alone, renewed
// first when near its expiry, with its expires_at (banklink.ServiceCredential);
// anything else is the sealed secret. The caller clears it.
func (d *Deps) serviceSecret(ctx context.Context, cred vault.Credential) ([]byte, error) {
	if d.BankLink == nil || cred.Kind != banklink.KindAccessToken {
		return append([]byte(nil), cred.Secret...), nil
	}
	ss, err := d.BankLink.ServiceCredential(ctx, cred)
	if err != nil {
		return nil, err
	}
	return ss.Secret, nil
}

// followPointer returns the credential ref that the owner's pointer names.
// The route fixes the kind, so the policy is asked before anything is read;
// an unknown owner, or one with no credential, is 404 like an unknown ref.
func (d *Deps) followPointer(c echo.Context, e audit.Entry, t revealTarget, purpose string) (string, error) {
	if !d.Policy.MayReveal(serviceName(c), kindOwnedBy(t.owner), purpose) {
		return "", d.refuseReveal(c, e, "", "the policy does not allow this kind or purpose",
			kluis.Errorf(kluis.EForbidden, "this service may not reveal this credential for this purpose"))
	}
	ref, err := d.BankLink.OwnerCredential(c.Request().Context(), t.owner)
	if kluis.ErrorCode(err) == kluis.ENotFound {
		return "", d.refuseReveal(c, e, "", "not found", kluis.Errorf(kluis.ENotFound, "not found"))
	}
	return ref, err
}

// kindOwnedBy is the credential kind an owner route reveals.
func kindOwnedBy(o vault.Owner) string {
	if o.Type == vault.OwnerAccount {
		return accountnumber.Kind
	}
	return banklink.KindAccessToken
}

// openFor opens ref for t. Through an owner's pointer, the credential must
// be that owner's (vault.OpenOwned). A record whose format binds no owner
// (version 1, until the rotation job re-seals it) is believed only if its
// owner is the one and only owner pointing at it: otherwise an edited owner
// column and a second pointer together could pass for the owner's own.
func (d *Deps) openFor(ctx context.Context, t revealTarget, ref string) (vault.Credential, error) {
	var (
		cred vault.Credential
		err  error
	)
	if t.via == revealViaCredential {
		cred, err = d.Vault.Open(ctx, ref)
	} else {
		cred, err = d.Vault.OpenOwned(ctx, t.owner, ref)
	}
	if err != nil || cred.OwnerBound {
		return cred, err
	}
	var pointers vault.OwnerPointers
	if d.BankLink != nil {
		pointers = d.BankLink
	}
	if err := vault.CheckPointers(ctx, pointers, nil, ref, cred.Owner); err != nil {
		cred.Zero()
		return vault.Credential{}, err
	}
	return cred, nil
}

// refuseReveal audits a refused reveal and returns the refusal; if the audit
// log cannot take the entry, the caller gets 503 instead.
func (d *Deps) refuseReveal(c echo.Context, e audit.Entry, target, reason string, refusal error) error {
	e.Outcome, e.Target = audit.OutcomeDenied, target
	e.Details["reason"] = reason
	if err := d.Auditor.Record(c.Request().Context(), e); err != nil {
		return err
	}
	return refusal
}

// failedOpen audits a reveal the policy allowed but whose credential did not
// open. Not found means its subject's keys were destroyed (an erasure under
// way): a refusal like any unknown ref, with the same 404. A record that is
// not where it claims (integrity) is audited and counted as such. Any other
// internal error is recorded as a failure, for whoever investigates; the
// caller gets the 500 either way. A provider that cannot be reached is no
// reveal and is not recorded.
func (d *Deps) failedOpen(c echo.Context, e audit.Entry, t revealTarget, found vault.Owner, err error) error {
	switch kluis.ErrorCode(err) {
	case kluis.ENotFound:
		return d.refuseReveal(c, e, e.Target, "credential erased", kluis.Errorf(kluis.ENotFound, "not found"))
	case vault.EIntegrity:
		return d.integrityFailure(c, e, t, found, err)
	case vault.CodeCredentialRevoked:
		// The owner withdrew consent at the provider: 410, audited.
		return d.refuseReveal(c, e, e.Target, "credential revoked", err)
	case kluis.EInternal:
		e.Outcome = audit.OutcomeFailure
		e.Details["reason"] = "credential does not open"
		d.recordFailure(c, e)
	}
	return err
}

// integrityFailure answers a pointer and a credential that disagree, or a
// record that does not authenticate where it lies: 500 with reason
// integrity and a message that says nothing more. It is audited (the refs
// and owners involved, no secret) and counted in
// kluis_reveal_integrity_failures_total; the cause goes to the log.
func (d *Deps) integrityFailure(c echo.Context, e audit.Entry, t revealTarget, found vault.Owner, cause error) error {
	d.metrics.revealIntegrity.WithLabelValues(t.via).Inc()
	e.Outcome = audit.OutcomeFailure
	e.Details["reason"] = "integrity"
	e.Details["credential_ref"] = e.Target
	if !found.IsZero() && found.Valid() {
		e.Details["credential_owner"] = found.String()
	}
	d.recordFailure(c, e)
	var ke *kluis.Error
	if errors.As(cause, &ke) && ke.Code == vault.EIntegrity {
		return cause
	}
	return kluis.Wrap(vault.EIntegrity, "internal error", cause)
}

// recordFailure writes the audit entry of a failed reveal. The caller is
// answering 500 whatever happens here, so a log that cannot take the entry
// is logged rather than turned into a 503.
func (d *Deps) recordFailure(c echo.Context, e audit.Entry) {
	if aerr := d.Auditor.Record(c.Request().Context(), e); aerr != nil {
		d.Logger.ErrorContext(c.Request().Context(), "audit of a failed reveal not written",
			"request_id", requestID(c), "cause", aerr.Error())
	}
}
