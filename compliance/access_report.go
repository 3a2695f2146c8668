package compliance

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
)

// AccessEntry is one line of a subject's access report: who did what to
// their data, when, and with what outcome. It is built from the audit log
// and carries no secret: of an entry's details only the credential kind
// and the purpose a service gave are shown.
type AccessEntry struct {
	At      time.Time   `json:"at"`
	Actor   AccessActor `json:"actor"`
	Action  string      `json:"action"`
	Kind    string      `json:"kind,omitempty"`
	Purpose string      `json:"purpose,omitempty"`
	Outcome string      `json:"outcome"`

	seq int64
}

// AccessActor names who acted: a service (by name), a staff member, the
// user, or kluis itself (a job, a provider's notice).
type AccessActor struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// StaffActorForSubject is the id a subject's own report gives every staff
// member: the person learns that compliance staff acted, not which employee.
const StaffActorForSubject = "compliance"

// AccessReport returns up to limit entries of the access report of the
// subject whose external id is subject, newest first, before the audit
// position before (0: from the newest); next is the position of the
// following page, 0 when there is none. It answers from the audit log by
// pseudonym, so it outlives an erasure as the audit entries do. That staff
// looked is itself audited.
func (s *Service) AccessReport(ctx context.Context, by Staff, subject string, limit int, before int64) ([]AccessEntry, int64, error) {
	entries, next, err := s.accessReport(ctx, subject, limit, before, true)
	if err != nil {
		return nil, 0, err
	}
	err = s.auditor.Record(ctx, audit.Entry{
		ActorKind: audit.ActorStaff, Actor: by.ID, Action: "subject.access_report", Outcome: audit.OutcomeSuccess,
		Subject: subject, RequestID: by.RequestID, Details: map[string]any{"entries": len(entries)},
	})
	return entries, next, err
}

// OwnAccessReport is AccessReport for the subject themself (their user
// token): staff members are named by role only (StaffActorForSubject).
func (s *Service) OwnAccessReport(ctx context.Context, subject string, limit int, before int64) ([]AccessEntry, int64, error) {
	return s.accessReport(ctx, subject, limit, before, false)
}

func (s *Service) accessReport(ctx context.Context, subject string, limit int, before int64, staffView bool) ([]AccessEntry, int64, error) {
	pseudonym := s.auditor.Pseudonym(subject)
	if pseudonym == "" {
		return nil, 0, kluis.Unavailable("key store", fmt.Errorf("compliance: no audit pseudonym key"))
	}
	if before <= 0 {
		before = 1<<63 - 1
	}
	// Entries about the subject, and entries the subject made as a user.
	found, err := audit.SubjectEntriesBefore(ctx, s.db.Pool, pseudonym, before, limit+1)
	if err != nil {
		return nil, 0, fmt.Errorf("compliance: access report: %w", err)
	}
	entries := make([]AccessEntry, len(found))
	for i, f := range found {
		entries[i] = AccessEntry{
			seq: f.Seq, At: f.OccurredAt.UTC(), Action: f.Action, Outcome: f.Outcome,
			Actor: reportActor(f.ActorKind, f.Actor, pseudonym, subject, staffView),
		}
		entries[i].Kind, entries[i].Purpose = detailText(f.Details, "kind"), detailText(f.Details, "purpose")
	}
	if len(entries) <= limit {
		return entries, 0, nil
	}
	entries = entries[:limit]
	return entries, entries[limit-1].seq, nil
}

// reportActor maps an audit actor onto the report's four kinds. A user is
// named by the external id when it is the subject (entries keep only a
// pseudonym), else by the pseudonym; a provider's notice and an anonymous
// caller are kluis's side of things (system).
func reportActor(kind, actor, pseudonym, subject string, staffView bool) AccessActor {
	switch kind {
	case audit.ActorService, audit.ActorSystem:
		return AccessActor{Type: kind, ID: actor}
	case audit.ActorStaff:
		if !staffView {
			actor = StaffActorForSubject
		}
		return AccessActor{Type: audit.ActorStaff, ID: actor}
	case audit.ActorUser:
		if actor == pseudonym {
			actor = subject
		}
		return AccessActor{Type: audit.ActorUser, ID: actor}
	case audit.ActorProvider:
		return AccessActor{Type: audit.ActorSystem, ID: "provider/" + actor}
	}
	return AccessActor{Type: audit.ActorSystem, ID: audit.ActorAnonymous}
}

// detailText is the detail name of an entry's details as text, as the
// report shows it ("" when absent or null): of the details, the report
// shows the credential kind and the purpose a service gave, nothing else.
func detailText(details json.RawMessage, name string) string {
	var d map[string]json.RawMessage
	if err := json.Unmarshal(details, &d); err != nil {
		return ""
	}
	v := d[name]
	if len(v) == 0 || string(v) == "null" {
		return ""
	}
	var str string
	if err := json.Unmarshal(v, &str); err == nil {
		return str
	}
	return string(v)
}
