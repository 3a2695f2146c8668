package compliance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
)

// PrefixLegalHold is the identifier prefix of legal holds.
const PrefixLegalHold = "hold_"

// ELegalHold is the error code of an action a legal hold refuses (the api
// answers it with 409).
const ELegalHold = "legal_hold"

// maxReason bounds the reason of a hold or an erasure request (the columns'
// check).
const maxReason = 500

// Staff is the compliance staff member acting, and the request it came in.
type Staff struct {
	ID        string
	RequestID string
}

// LegalHold is a hold on a subject's data. It names the subject by audit
// pseudonym only: the internal id stays in the database, the external id
// nowhere.
type LegalHold struct {
	ID               string     `json:"id"`
	SubjectPseudonym string     `json:"subject_pseudonym"`
	Reason           string     `json:"reason"`
	CreatedBy        string     `json:"created_by"`
	CreatedAt        time.Time  `json:"created_at"`
	LiftedBy         string     `json:"lifted_by,omitempty"`
	LiftedAt         *time.Time `json:"lifted_at,omitempty"`
}

// Service is what compliance staff and the scheduled jobs do with subjects'
// data: legal holds, erasure, export. It is safe for concurrent use.
type Service struct {
	db      *postgres.DB
	auditor *audit.Auditor
	keys    KeyShredder
	clock   kluis.Clock

	revokers []Revoker
	// sealed opens sealed records for the complete export (SetSealedOpener).
	sealed SealedOpener
	// revokeAttempts is how many revoke passes may leave items unrevoked
	// before the run waits for people (needs_attention).
	revokeAttempts int
	// stepHook, for tests, runs after each recorded erasure step; an error
	// stops the run there as a crash would.
	stepHook func(step string) error
}

// KeyShredder destroys a subject's keys in the caller's transaction;
// *vault.KeyRing is one.
type KeyShredder interface {
	DestroySubjectKeys(ctx context.Context, tx pgx.Tx, subjectID string) (int, error)
}

// Revoker revokes a subject's access at a bank-data provider, for erasure.
//
// RevokeSubject revokes every item of the subject (internal id) that is
// still live at its provider; it runs before the subject's keys are
// destroyed, so it can still open the access tokens. For each item the
// provider revoked, the transaction that marks it removed and destroys its
// credentials must call fence first: fence takes the subject's lock, fails
// with ELegalHold under a legal hold (then nothing of that transaction may
// commit, and RevokeSubject stops and returns that error), and records the
// item as revoked by the run. Items the provider did not revoke are listed
// in the answer, not returned as an error. RevokeSubject must be idempotent
// (erasure calls it again after a crash; items already removed are skipped)
// and must not delete rows: erasure deletes them afterwards. An error
// leaves the erasure approved, to be completed by a later run.
//
// Live counts, in the caller's transaction (which holds the subject's lock),
// the subject's items still live at a provider and its exchanges in flight
// (a provider token may be on its way): the keys are not destroyed while
// any remains, as the tokens could then no longer be revoked.
type Revoker interface {
	RevokeSubject(ctx context.Context, subjectID string, fence RevokeFence) (Revocation, error)
	Live(ctx context.Context, tx pgx.Tx, subjectID string) (int, error)
}

// RevokeFence runs first in the transaction that removes an item
// (Revoker); revoked says whether its provider revoked it (false when its
// token was already dead there, so there was nothing left to revoke).
type RevokeFence func(ctx context.Context, tx pgx.Tx, itemID string, revoked bool) error

// Revocation is what one RevokeSubject pass could not do: the items whose
// provider did not revoke them.
type Revocation struct {
	Unrevoked []UnrevokedItem
}

// UnrevokedItem is an item a provider did not revoke, and why (an error
// code, never the provider's message).
type UnrevokedItem struct {
	ItemID   string `json:"item_id"`
	Provider string `json:"provider"`
	Reason   string `json:"reason"`
}

// NewService returns the compliance service. keys destroys subject keys
// (the vault's key ring); clock may be nil for the wall clock.
func NewService(db *postgres.DB, auditor *audit.Auditor, keys KeyShredder, clock kluis.Clock) *Service {
	if clock == nil {
		clock = kluis.SystemClock{}
	}
	return &Service{db: db, auditor: auditor, keys: keys, clock: clock, revokeAttempts: DefaultRevokeAttempts}
}

// DefaultRevokeAttempts is how many revoke passes of one erasure may leave
// items unrevoked at their provider before the run is needs_attention
// (KLUIS_ERASURE_REVOKE_ATTEMPTS). With the erasure-resume job every 15
// minutes, 10 passes give a provider two and a half hours.
const DefaultRevokeAttempts = 10

// SetRevokeAttempts sets how many revoke passes may leave items unrevoked
// before the run is needs_attention; n < 1 keeps DefaultRevokeAttempts.
// Call it while wiring.
func (s *Service) SetRevokeAttempts(n int) {
	if n >= 1 {
		s.revokeAttempts = n
	}
}

// AddRevoker registers a provider revoker for erasure. Call it while wiring,
// before the service is used.
func (s *Service) AddRevoker(r Revoker) { s.revokers = append(s.revokers, r) }

func checkReason(reason string) (string, error) {
	reason = strings.TrimSpace(reason)
	if reason == "" || len(reason) > maxReason {
		return "", kluis.Errorf(kluis.EInvalid, "reason is required, at most %d characters", maxReason)
	}
	return reason, nil
}

// lookupSubject finds the internal id of the subject; an unknown subject is
// ENotFound, as kluis holds nothing on them.
func lookupSubject(ctx context.Context, q postgres.Querier, externalID string) (string, error) {
	if externalID == "" || len(externalID) > 255 {
		return "", kluis.Errorf(kluis.ENotFound, "not found")
	}
	id, err := vault.LookupSubject(ctx, q, externalID)
	if kluis.ErrorCode(err) == kluis.ENotFound {
		return "", kluis.Errorf(kluis.ENotFound, "not found")
	}
	return id, err
}

// PlaceHold puts a legal hold on the subject whose external id is subject.
// A subject kluis holds nothing on is ENotFound.
func (s *Service) PlaceHold(ctx context.Context, by Staff, subject, reason string) (LegalHold, error) {
	reason, err := checkReason(reason)
	if err != nil {
		return LegalHold{}, err
	}
	h := LegalHold{
		ID: kluis.NewID(PrefixLegalHold), SubjectPseudonym: s.auditor.Pseudonym(subject), Reason: reason,
		CreatedBy: by.ID, CreatedAt: s.clock.Now().UTC().Truncate(time.Microsecond),
	}
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		sid, err := lookupSubject(ctx, tx, subject)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO legal_holds (id, held_subject_id, subject_pseudonym, reason, created_by, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, h.ID, sid, h.SubjectPseudonym, h.Reason, h.CreatedBy, h.CreatedAt); err != nil {
			return fmt.Errorf("compliance: place hold: %w", postgres.Translate(err))
		}
		return s.auditor.Append(ctx, tx, audit.Entry{
			ActorKind: audit.ActorStaff, Actor: by.ID, Action: "legal_hold.placed", Target: h.ID,
			Outcome: audit.OutcomeSuccess, Subject: subject, RequestID: by.RequestID,
		})
	})
	return h, err
}

// LiftHold lifts the hold id. Lifting a hold already lifted changes nothing
// and succeeds; an unknown hold is ENotFound.
func (s *Service) LiftHold(ctx context.Context, by Staff, id string) error {
	if !kluis.ValidID(PrefixLegalHold, id) {
		return kluis.Errorf(kluis.ENotFound, "not found")
	}
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		var pseudonym string
		err := tx.QueryRow(ctx, `
			UPDATE legal_holds SET lifted_by = $2, lifted_at = $3
			WHERE id = $1 AND lifted_at IS NULL RETURNING subject_pseudonym`,
			id, by.ID, s.clock.Now().UTC()).Scan(&pseudonym)
		if errors.Is(err, pgx.ErrNoRows) {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM legal_holds WHERE id = $1)`, id).Scan(&exists); err != nil {
				return fmt.Errorf("compliance: lift hold: %w", postgres.Translate(err))
			}
			if !exists {
				return kluis.Errorf(kluis.ENotFound, "not found")
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("compliance: lift hold: %w", postgres.Translate(err))
		}
		return s.auditor.AppendPseudonymous(ctx, tx, audit.Entry{
			ActorKind: audit.ActorStaff, Actor: by.ID, Action: "legal_hold.lifted", Target: id,
			Outcome: audit.OutcomeSuccess, RequestID: by.RequestID,
		}, pseudonym)
	})
}

// GuardDestruction is the legal-hold check of every transaction that
// destroys a subject's data for an erasure: it locks the subject's row FOR
// UPDATE, which conflicts with the key-share lock a hold's insert takes on
// it (its foreign key), and fails with ELegalHold while a hold names the
// subject. A hold committed before the lock is seen; one placed after it
// waits until the transaction ends. So nothing is destroyed after a hold
// commits.
func GuardDestruction(ctx context.Context, tx pgx.Tx, subjectID string) error {
	if err := vault.LockSubject(ctx, tx, subjectID); err != nil {
		return err
	}
	return RefuseIfHeld(ctx, tx, subjectID)
}

// RefuseIfHeld fails with ELegalHold while a hold names the subject
// (internal id). Without the subject's lock (GuardDestruction) it is an
// early answer only: a hold may commit right after it.
func RefuseIfHeld(ctx context.Context, q postgres.Querier, subjectID string) error {
	h, err := held(ctx, q, subjectID)
	if err != nil {
		return err
	}
	if h {
		return kluis.Errorf(ELegalHold, "the subject is under a legal hold; the erasure waits until it is lifted")
	}
	return nil
}

// held reports whether a hold that is not lifted names the subject.
func held(ctx context.Context, q postgres.Querier, subjectID string) (bool, error) {
	var h bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM legal_holds WHERE held_subject_id = $1 AND lifted_at IS NULL)`, subjectID).Scan(&h)
	if err != nil {
		return false, fmt.Errorf("compliance: legal holds: %w", postgres.Translate(err))
	}
	return h, nil
}
