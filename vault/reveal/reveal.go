// Package reveal is the vault's reveal use case: an internal service asks
// for a credential's secret, by its ref or through the pointer of the item
// or account that owns it, and gets it only if the service policy allows
// the kind, the purpose and the subject's app, the credential is where its
// pointer says, it opens, and its audit entry is committed.
//
// The steps are, in order: describe (one read of the record and its subject
// key, vault.Store.Fetch) → policy → owner and pointer integrity → open →
// the provider's usable secret (Stitch's renewal) → audit → answer. Every
// reveal, allowed or refused, is audited; the secret leaves only after its
// entry commits, and an audit log that cannot take the entry is 503 with no
// secret. What the use case needs from outside the vault is a port each,
// implemented by its owner and wired by cmd/kluis: the service policy
// (Policy), the owners' pointers (Pointers, bank linking), the provider's
// usable secret (Secrets, bank linking) and the audit log (AuditLog). The
// HTTP layer (api) only decodes the request, calls Reveal, maps its error
// and encodes the answer.
package reveal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/vault"
)

// Ways to name what to reveal: the audit entry's "via", and the label of
// kluis_reveal_integrity_failures_total.
const (
	ViaCredential = "credential"
	ViaAccount    = "account"
	ViaItem       = "item"
)

// Action is the audit action of every reveal, allowed or refused.
const Action = "credential.reveal"

// Policy is the service policy's say on reveals (api.Policy implements
// it, reloaded while serving).
type Policy interface {
	// MayReveal reports whether service may reveal a credential of kind for
	// purpose.
	MayReveal(service, kind, purpose string) bool
	// MayRevealApp reports whether service may reveal the credentials of
	// app's users.
	MayRevealApp(service, app string) bool
}

// Pointers are the owners' pointers to their credentials: items'
// credential_ref and accounts' account_number_ref live in bank linking's
// tables, and bank linking answers for them (banklink.Service).
type Pointers interface {
	// OwnerCredential returns the ref the live owner's pointer names;
	// ENotFound for an unknown or removed owner, or one with none.
	OwnerCredential(ctx context.Context, owner vault.Owner) (string, error)
	vault.OwnerPointers
}

// Secrets turns an opened credential into what a service gets: for a bank
// whose tokens expire (Stitch), the usable access token, renewed first
// when near its expiry, with its expires_at; otherwise a copy of the
// sealed secret. The caller clears the result.
type Secrets interface {
	ServiceSecret(ctx context.Context, cred vault.Credential) ([]byte, error)
}

// SecretsFunc adapts a function to Secrets.
type SecretsFunc func(ctx context.Context, cred vault.Credential) ([]byte, error)

// ServiceSecret calls f.
func (f SecretsFunc) ServiceSecret(ctx context.Context, cred vault.Credential) ([]byte, error) {
	return f(ctx, cred)
}

// AuditLog takes an entry and returns once it is committed (audit.Auditor,
// or audit.Group, which commits several callers' entries in one
// transaction). An error means it was not: the reveal fails closed.
type AuditLog interface {
	Record(ctx context.Context, e audit.Entry) error
}

// Records reads and opens credentials (vault.Store).
type Records interface {
	Fetch(ctx context.Context, ref string) (vault.Fetched, error)
	OpenFetched(ctx context.Context, f vault.Fetched, owner vault.Owner) (vault.Credential, error)
	// Kinds is the registry of credential kinds: it says which kind an
	// owner's pointer leads to.
	Kinds() *vault.Kinds
}

// Options are the use case's ports. Records, Policy and Audit are
// required; Pointers may be nil when kluis links no banks (then the owner
// routes find nothing, and a version-1 record, whose owner only a pointer
// can confirm, does not open); Secrets nil gives every secret as sealed.
type Options struct {
	Records  Records
	Policy   Policy
	Pointers Pointers
	Secrets  Secrets
	Audit    AuditLog
	// Logger gets the audit log's failure to record a failed reveal (the
	// caller is answering 500 anyway); discarded if nil.
	Logger *slog.Logger
}

// Service is the reveal use case. It is safe for concurrent use.
type Service struct {
	opts Options
}

// New returns the use case over its ports.
func New(opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Service{opts: opts}
}

// Request is one reveal: who asks (the service the client certificate
// names), why (its purpose, already checked as a name by the caller), the
// request's id for the audit entry, and what: a credential's Ref (Via
// ViaCredential) or an owner whose pointer leads to one (ViaItem,
// ViaAccount).
type Request struct {
	Service   string
	Purpose   string
	RequestID string
	Via       string
	Ref       string
	Owner     vault.Owner
}

// Revealed is the answer: the credential and what the service gets of its
// secret (Secrets). The caller clears Secret once it has written it.
type Revealed struct {
	Ref    string
	Kind   string
	Owner  vault.Owner
	Secret []byte
}

// forbidden is the policy's refusal, the same whichever rule refused.
func forbidden() error {
	return kluis.Errorf(kluis.EForbidden, "this service may not reveal this credential for this purpose")
}

// Reveal reveals what r names, or says why not; see the package comment
// for the order of its steps. Its errors, by code: EInvalid (a request
// naming no way to reveal); ENotFound (unknown ref or owner, no
// credential, or erased: the same answer for all); EForbidden (the
// policy); vault.EIntegrity (a pointer and a credential that disagree, or
// a record that does not authenticate where it lies: audited as such);
// vault.CodeCredentialRevoked (410); EUnavailable (the key provider, the
// audit log, the bank); anything else is internal.
func (s *Service) Reveal(ctx context.Context, r Request) (Revealed, error) {
	e := audit.Entry{
		ActorKind: audit.ActorService, Actor: r.Service, Action: Action,
		RequestID: r.RequestID, Details: map[string]any{"purpose": r.Purpose, "via": r.Via},
	}
	ref := r.Ref
	var owner vault.Owner // the owner whose pointer was followed; zero by ref
	switch r.Via {
	case ViaCredential:
	case ViaItem, ViaAccount:
		owner = r.Owner
		e.Details["kind"] = s.kindOwnedBy(owner)
		if owner.Valid() {
			// Only a well-formed id is worth keeping: the rest is the caller's noise.
			e.Details["owner"] = owner.String()
		}
		var err error
		if ref, err = s.followPointer(ctx, e, r); err != nil {
			return Revealed{}, err
		}
	default:
		return Revealed{}, kluis.Errorf(kluis.EInvalid, "reveal: unknown way %q", r.Via)
	}
	f, err := s.opts.Records.Fetch(ctx, ref)
	if err != nil {
		if kluis.ErrorCode(err) == kluis.ENotFound {
			return Revealed{}, s.refuse(ctx, e, "", "not found", kluis.Errorf(kluis.ENotFound, "not found"))
		}
		return Revealed{}, err
	}
	e.Target, e.Subject = f.Ref, f.ExternalSubjectID
	e.Details["kind"] = f.Kind
	if !owner.IsZero() && f.Owner != owner {
		return Revealed{}, s.integrityFailure(ctx, e, f.Owner,
			fmt.Errorf("reveal: %s points at credential %s of %s", owner, ref, f.Owner))
	}
	if err := s.judge(ctx, e, r, f); err != nil {
		return Revealed{}, err
	}
	cred, err := s.open(ctx, f, owner)
	if err != nil {
		return Revealed{}, s.failedOpen(ctx, e, f.Owner, err)
	}
	defer cred.Zero()
	secret, err := s.serviceSecret(ctx, cred)
	if err != nil {
		return Revealed{}, err
	}
	e.Details["owner"] = cred.Owner.String()
	e.Outcome = audit.OutcomeSuccess
	if err := s.opts.Audit.Record(ctx, e); err != nil {
		clear(secret)
		return Revealed{}, err
	}
	return Revealed{Ref: cred.Ref, Kind: cred.Kind, Owner: cred.Owner, Secret: secret}, nil
}

// kindOwnedBy is the credential kind an owner's pointer leads to (an
// account's numbers, an item's access token), as the features registered it.
func (s *Service) kindOwnedBy(o vault.Owner) string {
	return s.opts.Records.Kinds().RevealableOwnedBy(o.Type)
}

// followPointer returns the ref the owner's pointer names. The route fixes
// the kind, so the policy is asked before anything is read; an unknown
// owner, or one with no credential, is ENotFound like an unknown ref.
func (s *Service) followPointer(ctx context.Context, e audit.Entry, r Request) (string, error) {
	if !s.opts.Policy.MayReveal(r.Service, s.kindOwnedBy(r.Owner), r.Purpose) {
		return "", s.refuse(ctx, e, "", "the policy does not allow this kind or purpose", forbidden())
	}
	if s.opts.Pointers == nil {
		return "", s.refuse(ctx, e, "", "not found", kluis.Errorf(kluis.ENotFound, "not found"))
	}
	ref, err := s.opts.Pointers.OwnerCredential(ctx, r.Owner)
	if kluis.ErrorCode(err) == kluis.ENotFound {
		return "", s.refuse(ctx, e, "", "not found", kluis.Errorf(kluis.ENotFound, "not found"))
	}
	return ref, err
}

// judge asks the policy about the credential's kind and purpose, then its
// subject's app; a refusal is audited.
func (s *Service) judge(ctx context.Context, e audit.Entry, r Request, f vault.Fetched) error {
	if !s.opts.Policy.MayReveal(r.Service, f.Kind, r.Purpose) {
		return s.refuse(ctx, e, f.Ref, "the policy does not allow this kind or purpose", forbidden())
	}
	e.Details["app"] = f.App
	if !s.opts.Policy.MayRevealApp(r.Service, f.App) {
		return s.refuse(ctx, e, f.Ref, "the policy does not allow this app", forbidden())
	}
	return nil
}

// open opens f; through an owner's pointer the credential must be that
// owner's (vault.Store.OpenFetched checks it). A record whose format binds
// no owner (version 1, until the rotation job re-seals it) is believed
// only if its owner is the one and only owner pointing at it: otherwise an
// edited owner column and a second pointer together could pass for the
// owner's own.
func (s *Service) open(ctx context.Context, f vault.Fetched, owner vault.Owner) (vault.Credential, error) {
	cred, err := s.opts.Records.OpenFetched(ctx, f, owner)
	if err != nil || cred.OwnerBound {
		return cred, err
	}
	var pointers vault.OwnerPointers
	if s.opts.Pointers != nil {
		pointers = s.opts.Pointers
	}
	if err := vault.CheckPointers(ctx, pointers, nil, f.Ref, cred.Owner); err != nil {
		cred.Zero()
		return vault.Credential{}, err
	}
	return cred, nil
}

// serviceSecret is what the service gets of cred (Secrets), or a copy of
// its secret.
func (s *Service) serviceSecret(ctx context.Context, cred vault.Credential) ([]byte, error) {
	if s.opts.Secrets == nil {
		return append([]byte(nil), cred.Secret...), nil
	}
	return s.opts.Secrets.ServiceSecret(ctx, cred)
}

// refuse audits a refused reveal and returns the refusal; if the audit log
// cannot take the entry, the caller gets its error (503) instead.
func (s *Service) refuse(ctx context.Context, e audit.Entry, target, reason string, refusal error) error {
	e.Outcome, e.Target = audit.OutcomeDenied, target
	e.Details["reason"] = reason
	if err := s.opts.Audit.Record(ctx, e); err != nil {
		return err
	}
	return refusal
}

// failedOpen audits a reveal the policy allowed but whose credential did
// not open. Not found means its subject's keys were destroyed (an erasure
// under way): a refusal like any unknown ref. A record that is not where it
// claims (integrity) is audited as such. A tombstone is 410, audited. Any
// other internal error is recorded as a failure, for whoever investigates.
// A provider that cannot be reached is no reveal and is not recorded.
func (s *Service) failedOpen(ctx context.Context, e audit.Entry, found vault.Owner, err error) error {
	switch kluis.ErrorCode(err) {
	case kluis.ENotFound:
		return s.refuse(ctx, e, e.Target, "credential erased", kluis.Errorf(kluis.ENotFound, "not found"))
	case vault.EIntegrity:
		return s.integrityFailure(ctx, e, found, err)
	case vault.CodeCredentialRevoked:
		// The owner withdrew consent at the provider: 410, audited.
		return s.refuse(ctx, e, e.Target, "credential revoked", err)
	case kluis.EInternal:
		e.Outcome = audit.OutcomeFailure
		e.Details["reason"] = "credential does not open"
		s.recordFailure(ctx, e)
	}
	return err
}

// integrityFailure answers a pointer and a credential that disagree, or a
// record that does not authenticate where it lies: EIntegrity with a
// message that says nothing more. It is audited (the refs and owners
// involved, no secret); the cause stays wrapped for the log.
func (s *Service) integrityFailure(ctx context.Context, e audit.Entry, found vault.Owner, cause error) error {
	e.Outcome = audit.OutcomeFailure
	e.Details["reason"] = "integrity"
	e.Details["credential_ref"] = e.Target
	if !found.IsZero() && found.Valid() {
		e.Details["credential_owner"] = found.String()
	}
	s.recordFailure(ctx, e)
	var ke *kluis.Error
	if errors.As(cause, &ke) && ke.Code == vault.EIntegrity {
		return cause
	}
	return kluis.Wrap(vault.EIntegrity, "internal error", cause)
}

// recordFailure writes the audit entry of a failed reveal. The caller is
// answering 500 whatever happens here, so a log that cannot take the entry
// is logged rather than turned into a 503.
func (s *Service) recordFailure(ctx context.Context, e audit.Entry) {
	if err := s.opts.Audit.Record(ctx, e); err != nil {
		s.opts.Logger.ErrorContext(ctx, "audit of a failed reveal not written",
			"request_id", e.RequestID, "cause", err.Error())
	}
}
