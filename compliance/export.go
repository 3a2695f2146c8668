package compliance

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
)

// maxExportAudit bounds the audit entries one export carries; Truncated says
// when there were more.
const maxExportAudit = 10000

// SubjectExport is everything kluis holds on one subject (POPIA s23): every
// row of every table the catalog shows as theirs, and the audit entries about
// them. Secrets never appear: ciphertext, hashes and MACs (every bytea
// column) and columns named as secrets are left out and listed in Withheld;
// references to sealed records (credential_ref, account_number_ref) stay, as
// references.
type SubjectExport struct {
	SubjectPseudonym string    `json:"subject_pseudonym"`
	SubjectID        string    `json:"subject_id"`
	SubjectSince     time.Time `json:"subject_since"`
	GeneratedAt      time.Time `json:"generated_at"`
	// Records holds the rows by category (table), each row an object of its
	// columns.
	Records map[string][]json.RawMessage `json:"records"`
	// Withheld lists, by table, the columns left out as secret.
	Withheld map[string][]string `json:"withheld"`
	// LegalHolds are the holds on the subject, lifted or not.
	LegalHolds []LegalHold `json:"legal_holds"`
	// AuditEntries are the entries naming the subject (by pseudonym), as
	// subject or as acting user, oldest first.
	AuditEntries []ExportedAuditEntry `json:"audit_entries"`
	Truncated    bool                 `json:"audit_entries_truncated,omitempty"`
}

// ExportedAuditEntry is an audit entry as an export shows it.
type ExportedAuditEntry struct {
	Seq        int64           `json:"seq"`
	OccurredAt time.Time       `json:"occurred_at"`
	ActorKind  string          `json:"actor_kind"`
	Actor      string          `json:"actor"`
	Action     string          `json:"action"`
	Target     string          `json:"target,omitempty"`
	Outcome    string          `json:"outcome"`
	Details    json.RawMessage `json:"details"`
}

// ExportSubject gathers what kluis holds on the subject whose external id is
// subject, and audits that staff did. An unknown subject is ENotFound.
func (s *Service) ExportSubject(ctx context.Context, by Staff, subject string) (SubjectExport, error) {
	out, err := s.gatherExport(ctx, subject, nil)
	if err != nil {
		return out, err
	}
	err = s.auditor.Record(ctx, audit.Entry{
		ActorKind: audit.ActorStaff, Actor: by.ID, Action: "subject.exported", Outcome: audit.OutcomeSuccess,
		Subject: subject, RequestID: by.RequestID, Details: map[string]any{"categories": len(out.Records)},
	})
	return out, err
}

// gatherExport reads the export of subject in one repeatable-read,
// read-only transaction, so that it is one consistent view; also, when not
// nil, reads more in the same transaction (the sealed records of a complete
// export) given the subject's internal id.
func (s *Service) gatherExport(ctx context.Context, subject string, also func(ctx context.Context, tx pgx.Tx, sid string) error) (SubjectExport, error) {
	out := SubjectExport{
		SubjectPseudonym: s.auditor.Pseudonym(subject), GeneratedAt: s.clock.Now().UTC(),
		Records: map[string][]json.RawMessage{}, Withheld: map[string][]string{},
		LegalHolds: []LegalHold{}, AuditEntries: []ExportedAuditEntry{},
	}
	tx, err := s.db.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return out, fmt.Errorf("compliance: export: %w", postgres.Translate(err))
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	sid, err := lookupSubject(ctx, tx, subject)
	if err != nil {
		return out, err
	}
	out.SubjectID = sid
	if out.SubjectSince, err = vault.SubjectCreatedAt(ctx, tx, sid); err != nil {
		return out, err
	}
	if err := exportRecords(ctx, tx, sid, &out); err != nil {
		return out, err
	}
	if out.LegalHolds, err = exportHolds(ctx, tx, sid); err != nil {
		return out, err
	}
	if out.AuditEntries, out.Truncated, err = exportAudit(ctx, tx, out.SubjectPseudonym); err != nil {
		return out, err
	}
	if also != nil {
		if err := also(ctx, tx, sid); err != nil {
			return out, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return out, fmt.Errorf("compliance: export: %w", postgres.Translate(err))
	}
	return out, nil
}

func exportRecords(ctx context.Context, tx pgx.Tx, sid string, out *SubjectExport) error {
	cat, err := loadCatalog(ctx, tx)
	if err != nil {
		return err
	}
	plan, err := cat.subjectPlan()
	if err != nil {
		return err
	}
	for _, step := range plan {
		if step.Table == "subjects" {
			continue // external_id is what the person gave us; the id and date are above
		}
		hidden := cat.withheld(step.Table)
		rows, err := tx.Query(ctx, fmt.Sprintf(`SELECT (to_jsonb(t) - $2::text[])::text FROM %s AS t WHERE %s`,
			quoteIdent(step.Table), step.Where), sid, hidden)
		if err != nil {
			return fmt.Errorf("compliance: export %s: %w", step.Table, postgres.Translate(err))
		}
		recs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (json.RawMessage, error) {
			var s string
			err := r.Scan(&s)
			return json.RawMessage(s), err
		})
		if err != nil {
			return fmt.Errorf("compliance: export %s: %w", step.Table, postgres.Translate(err))
		}
		if len(recs) > 0 {
			out.Records[step.Table] = recs
			if len(hidden) > 0 {
				out.Withheld[step.Table] = hidden
			}
		}
	}
	return nil
}

func exportHolds(ctx context.Context, tx pgx.Tx, sid string) ([]LegalHold, error) {
	rows, err := tx.Query(ctx, `
		SELECT id, subject_pseudonym, reason, created_by, created_at, coalesce(lifted_by, ''), lifted_at
		FROM legal_holds WHERE held_subject_id = $1 ORDER BY created_at`, sid)
	if err != nil {
		return nil, fmt.Errorf("compliance: export holds: %w", postgres.Translate(err))
	}
	holds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (LegalHold, error) {
		var h LegalHold
		err := r.Scan(&h.ID, &h.SubjectPseudonym, &h.Reason, &h.CreatedBy, &h.CreatedAt, &h.LiftedBy, &h.LiftedAt)
		return h, err
	})
	if err != nil {
		return nil, fmt.Errorf("compliance: export holds: %w", postgres.Translate(err))
	}
	return holds, nil
}

func exportAudit(ctx context.Context, tx pgx.Tx, pseudonym string) ([]ExportedAuditEntry, bool, error) {
	found, err := audit.SubjectEntriesOldest(ctx, tx, pseudonym, maxExportAudit+1)
	if err != nil {
		return nil, false, fmt.Errorf("compliance: export audit: %w", err)
	}
	entries := make([]ExportedAuditEntry, len(found))
	for i, f := range found {
		entries[i] = ExportedAuditEntry(f)
	}
	if len(entries) > maxExportAudit {
		return entries[:maxExportAudit], true, nil
	}
	return entries, false, nil
}
