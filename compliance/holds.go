package compliance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
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
	auditor *Auditor
	keys    KeyShredder
	clock   kluis.Clock

	revokers []Revoker
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
// RevokeSubject revokes every item of the subject (internal id) that is
// still live at its provider and returns how many it revoked; it runs before
// the subject's keys are destroyed, so it can still open the access tokens.
// It must be idempotent (erasure calls it again after a crash, and items
// already revoked or removed count zero) and it must not delete rows:
// erasure deletes them afterwards. An error leaves the erasure approved, to
// be completed by a later run; EUnavailable says the provider is down.
type Revoker interface {
	RevokeSubject(ctx context.Context, subjectID string) (int, error)
}

// NewService returns the compliance service. keys destroys subject keys
// (the vault's key ring); clock may be nil for the wall clock.
func NewService(db *postgres.DB, auditor *Auditor, keys KeyShredder, clock kluis.Clock) *Service {
	if clock == nil {
		clock = kluis.SystemClock{}
	}
	return &Service{db: db, auditor: auditor, keys: keys, clock: clock}
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
func lookupSubject(ctx context.Context, q vault.Querier, externalID string) (string, error) {
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
		return s.auditor.Append(ctx, tx, Entry{
			ActorKind: ActorStaff, Actor: by.ID, Action: "legal_hold.placed", Target: h.ID,
			Outcome: OutcomeSuccess, Subject: subject, RequestID: by.RequestID,
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
		return s.auditor.appendPseudonymous(ctx, tx, Entry{
			ActorKind: ActorStaff, Actor: by.ID, Action: "legal_hold.lifted", Target: id,
			Outcome: OutcomeSuccess, RequestID: by.RequestID,
		}, pseudonym)
	})
}

// held reports whether a hold that is not lifted names the subject.
func held(ctx context.Context, q vault.Querier, subjectID string) (bool, error) {
	var h bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM legal_holds WHERE held_subject_id = $1 AND lifted_at IS NULL)`, subjectID).Scan(&h)
	if err != nil {
		return false, fmt.Errorf("compliance: legal holds: %w", postgres.Translate(err))
	}
	return h, nil
}
