package api

import (
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/vault"
)

func init() {
	// A credential whose owner withdrew consent: 410 gone (credential_revoked).
	RegisterErrorStatus(vault.CodeCredentialRevoked, http.StatusGone)
	internalRoutes = append(internalRoutes, func(d *Deps, internal, _ *echo.Group) {
		internal.POST("/credentials/:ref/reveal", d.reveal)
	})
}

// revealRequest is the body of a reveal: why the service needs the secret.
type revealRequest struct {
	Purpose string `json:"purpose"`
}

// revealResponse carries the secret: {"access_token", "provider"} for a
// bank_access_token, {"account_number", "routing_number"} for an
// account_number ({"account_number", "branch_code", "bank_id"} for a South
// African manual account's).
type revealResponse struct {
	Ref    string          `json:"ref"`
	Kind   string          `json:"kind"`
	Secret json.RawMessage `json:"secret"`
}

// reveal decrypts a credential for an internal service whose policy allows
// its kind and the purpose given. Every reveal, allowed or refused, is
// audited, and the secret leaves only after its audit entry is committed: if
// the audit log cannot take the entry, the answer is 503 and no secret.
func (d *Deps) reveal(c echo.Context) error {
	ctx := c.Request().Context()
	ref, svc := c.Param("ref"), serviceName(c)
	var req revealRequest
	if err := DecodeJSON(c, &req); err != nil {
		return err
	}
	if !namePattern.MatchString(req.Purpose) {
		return kluis.Errorf(kluis.EInvalid, "purpose is required: a name of up to 128 letters, digits, '.', '_', '/' or '-'")
	}
	entry := compliance.Entry{
		ActorKind: compliance.ActorService, Actor: svc, Action: "credential.reveal",
		RequestID: requestID(c), Details: map[string]any{"purpose": req.Purpose},
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
	if !d.Policy.MayReveal(svc, info.Kind, req.Purpose) {
		return d.refuseReveal(c, entry, info.Ref, "the policy does not allow this kind or purpose",
			kluis.Errorf(kluis.EForbidden, "this service may not reveal this credential for this purpose"))
	}
	cred, err := d.Vault.Open(ctx, ref)
	if err != nil {
		return d.failedOpen(c, entry, err)
	}
	defer cred.Zero()
	entry.Outcome = compliance.OutcomeSuccess
	if err := d.Auditor.Record(ctx, entry); err != nil {
		return err
	}
	// The body is encoded here, so that the secret's only other copy is the
	// zeroed one above, and written with no-store (set for every answer).
	body, err := json.Marshal(revealResponse{Ref: cred.Ref, Kind: cred.Kind, Secret: cred.Secret})
	if err != nil {
		return err
	}
	defer clear(body)
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, body)
}

// refuseReveal audits a refused reveal and returns the refusal; if the audit
// log cannot take the entry, the caller gets 503 instead.
func (d *Deps) refuseReveal(c echo.Context, e compliance.Entry, target, reason string, refusal error) error {
	e.Outcome, e.Target = compliance.OutcomeDenied, target
	e.Details["reason"] = reason
	if err := d.Auditor.Record(c.Request().Context(), e); err != nil {
		return err
	}
	return refusal
}

// failedOpen audits a reveal the policy allowed but whose credential did not
// open. Not found means its subject's keys were destroyed (an erasure under
// way): a refusal like any unknown ref, with the same 404. A record that
// does not authenticate (tampered, or moved from its row) is recorded as a
// failure, for whoever investigates; the caller gets the 500 either way. A
// provider that cannot be reached is no reveal and is not recorded.
func (d *Deps) failedOpen(c echo.Context, e compliance.Entry, err error) error {
	switch kluis.ErrorCode(err) {
	case kluis.ENotFound:
		return d.refuseReveal(c, e, e.Target, "credential erased", kluis.Errorf(kluis.ENotFound, "not found"))
	case vault.CodeCredentialRevoked:
		// The owner withdrew consent at the provider: 410, audited.
		return d.refuseReveal(c, e, e.Target, "credential revoked", err)
	case kluis.EInternal:
		e.Outcome = compliance.OutcomeFailure
		e.Details["reason"] = "credential does not open"
		if aerr := d.Auditor.Record(c.Request().Context(), e); aerr != nil {
			d.Logger.ErrorContext(c.Request().Context(), "audit of a failed reveal not written",
				"request_id", requestID(c), "cause", aerr.Error())
		}
	}
	return err
}
