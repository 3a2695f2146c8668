// Package audit is kluis's audit log: the writer every feature records its
// changes through (Auditor, Entry, Actor), the keyed pseudonyms that name
// people in it, the sealer that hash-chains entries, the walk that verifies
// the chain and the signed head kept outside the database. It sits below
// every feature; compliance (retention, erasure, holds, export) builds on it.
package audit

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// Actor kinds: who did what an entry records.
const (
	ActorUser      = "user"
	ActorService   = "service"
	ActorStaff     = "staff"
	ActorSystem    = "system"
	ActorProvider  = "provider"
	ActorAnonymous = "anonymous"
)

const day = 24 * time.Hour

// MinRetention is the shortest time audit entries are kept: PCI DSS 10.5.1
// asks for at least twelve months. The database refuses a checkpoint on
// anything younger too, and retention (compliance) enforces it as the
// audit class's minimum.
const MinRetention = 365 * day

// Actor says who did something, for its audit entry: its kind (ActorUser,
// ActorService, …), its name (a user's external id, stored only as its
// pseudonym; a service, a staff member, a provider, a job) and the request
// it came with.
type Actor struct {
	Kind      string
	Name      string
	RequestID string
}

// User is the actor for a user's request.
func User(sub, requestID string) Actor {
	return Actor{Kind: ActorUser, Name: sub, RequestID: requestID}
}

// System is the actor for a job or another part of kluis acting alone.
func System(job string) Actor { return Actor{Kind: ActorSystem, Name: job} }

// Entry is the entry recording a's action on target about subject (an
// external id, or empty), with its outcome and details.
func (a Actor) Entry(action, target, outcome, subject string, details map[string]any) Entry {
	return Entry{ActorKind: a.Kind, Actor: a.Name, Action: action, Target: target, Outcome: outcome,
		Subject: subject, RequestID: a.RequestID, Details: details}
}

// Outcomes of an audited action.
const (
	OutcomeSuccess = "success"
	OutcomeDenied  = "denied"
	OutcomeFailure = "failure"
)

// Entry is one audited action. It carries identifiers only: never a secret,
// never a token, never personal data. People are named through keyed
// pseudonyms computed by the Auditor, so that entries survive erasure without
// naming the person while compliance can still find them.
type Entry struct {
	ActorKind string
	// Actor names the actor: a user's subject id (stored only as its
	// pseudonym), a service name, a staff member's id, a job's name; empty
	// for anonymous callers.
	Actor string
	// Action says what was done, dotted: "credential.reveal", "authn.failed".
	Action string
	// Target is the identifier acted on ("cred_…", "itm_…"), or empty.
	Target  string
	Outcome string
	// Subject is the data subject's external id (the user token's sub) the
	// action concerns, or empty; stored only as its pseudonym.
	Subject   string
	RequestID string
	// Details holds further identifiers, reasons and counts. Values must be
	// safe to keep for years: no secrets, no personal data.
	Details map[string]any
}

// Pseudonymizer computes keyed pseudonyms: the same input gives the same
// pseudonym under the same key, and without the key a pseudonym cannot be
// linked to its input. The vault's system keys provide one.
type Pseudonymizer interface {
	Pseudonym(kind, value string) string
}

// Auditor writes audit entries. Append writes inside the caller's transaction,
// so an entry exists exactly when the change it records does.
type Auditor struct {
	db     *postgres.DB
	pseudo Pseudonymizer
}

// NewAuditor returns an Auditor writing to db, naming people through pseudo.
// The clock is not used: an entry's time is the database's (occurred_at is
// set by a trigger), so that no writer can date an entry; the parameter
// stays for the callers that pass one.
func NewAuditor(db *postgres.DB, pseudo Pseudonymizer, _ kluis.Clock) *Auditor {
	return &Auditor{db: db, pseudo: pseudo}
}

// Pseudonym returns the pseudonym under which entries name a data subject, so
// that compliance can find a subject's entries.
func (a *Auditor) Pseudonym(subject string) string {
	return a.pseudo.Pseudonym("subject", subject)
}

// PseudonymOf returns the pseudonym of value of the given kind ("client_ip",
// …), for entries that name something other than a data subject.
func (a *Auditor) PseudonymOf(kind, value string) string {
	return a.pseudo.Pseudonym(kind, value)
}

// Append writes e in tx. The entry is durable when tx commits and is chained
// by the sealer shortly after.
func (a *Auditor) Append(ctx context.Context, tx pgx.Tx, e Entry) error {
	return a.appendEntry(ctx, tx, e, nil)
}

// AppendPseudonymous is Append for an entry about a subject known only by
// pseudonym (e.Subject is ignored): the steps of an erasure that run after
// the subject's external id is gone, and acts on records that keep only the
// pseudonym.
func (a *Auditor) AppendPseudonymous(ctx context.Context, tx pgx.Tx, e Entry, pseudonym string) error {
	return a.appendEntry(ctx, tx, e, &pseudonym)
}

func (a *Auditor) appendEntry(ctx context.Context, tx pgx.Tx, e Entry, subject *string) error {
	row, err := a.encode(e, subject)
	if err != nil {
		return err
	}
	return insertRows(ctx, tx, []entryRow{row})
}

// Record writes e in a transaction of its own, for actions that change
// nothing else (a refused request, a failed authentication). An error means
// the entry was not written: the caller fails closed.
func (a *Auditor) Record(ctx context.Context, e Entry) error {
	err := a.db.InTx(ctx, func(tx pgx.Tx) error { return a.Append(ctx, tx, e) })
	if err != nil && kluis.ErrorCode(err) != kluis.EInvalid {
		return kluis.Unavailable("audit log", err)
	}
	return err
}

// RecordAll writes entries in one transaction of their own: all of them or
// none (batched refusals).
func (a *Auditor) RecordAll(ctx context.Context, entries []Entry) error {
	return a.db.InTx(ctx, func(tx pgx.Tx) error {
		for _, e := range entries {
			if err := a.Append(ctx, tx, e); err != nil {
				return err
			}
		}
		return nil
	})
}

func validate(e Entry) error {
	switch e.ActorKind {
	case ActorUser, ActorService, ActorStaff, ActorSystem, ActorProvider, ActorAnonymous:
	default:
		return kluis.Errorf(kluis.EInvalid, "audit: unknown actor kind %q", e.ActorKind)
	}
	switch e.Outcome {
	case OutcomeSuccess, OutcomeDenied, OutcomeFailure:
	default:
		return kluis.Errorf(kluis.EInvalid, "audit: unknown outcome %q", e.Outcome)
	}
	if e.Action == "" {
		return kluis.Errorf(kluis.EInvalid, "audit: action is required")
	}
	return nil
}
