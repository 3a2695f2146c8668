package banklink

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/vault"
)

// Bounds on revoking a token kluis could not store: the first wait, the
// longest, and (by default) how long it keeps trying in all.
const (
	orphanRevokeFirstWait = 250 * time.Millisecond
	orphanRevokeMaxWait   = 15 * time.Second
	orphanRevokeCall      = 10 * time.Second
	// DefaultOrphanRevokeFor is how long an unstored token is retried.
	DefaultOrphanRevokeFor = 3 * time.Minute
)

// ReasonRevokeFailed is the reason an erasure gives for a link session
// whose unstored provider token was never confirmed revoked.
const ReasonRevokeFailed = "revoke_failed"

// revokeUnstored revokes at the provider a token kluis could not store (the
// erasure fence refused it, or the store failed), retrying with a bounded
// backoff detached from the request, while it keeps the session's exchange
// lease held: Live counts the exchange as in flight, so an erasure can
// neither shred nor complete meanwhile. It returns once the provider
// confirmed, or said the token is unknown (dead); the caller then releases
// the lease. If the bound is reached, the session is recorded as
// revoke_failed (counted by Live for ever, named by the erasure) with an
// item.revoke_failed audit entry, and an error is logged.
func (s *Service) revokeUnstored(ctx context.Context, p Provider, actor audit.Actor, row sessionRow, hash []byte, providerItemID, token string) {
	ctx = context.WithoutCancel(ctx)
	deadline := time.Now().Add(s.orphanRevokeFor)
	wait := orphanRevokeFirstWait
	var code string
	for {
		// Hold the lease across the call and the wait after it.
		if err := extendClaim(ctx, s.db.Pool, row.ID, hash, s.now().Add(orphanRevokeCall+wait+exchangeLease)); err != nil {
			s.log.Error("extend link session lease", "link_session", row.ID, "cause", err.Error())
		}
		callCtx, cancel := context.WithTimeout(ctx, orphanRevokeCall)
		err := p.RemoveItem(callCtx, token)
		cancel()
		if err == nil || kluis.ErrorCode(err) == CodeInvalidToken {
			return
		}
		code = kluis.ErrorCode(err)
		s.log.Warn("could not revoke an item kluis did not keep; retrying", "link_session", row.ID, "code", code)
		if time.Now().Add(wait).After(deadline) {
			break
		}
		time.Sleep(wait)
		wait = min(2*wait, orphanRevokeMaxWait)
	}
	s.log.Error("gave up revoking an item kluis did not keep: it may be live at the provider",
		"link_session", row.ID, "provider", row.Provider, "provider_item_id", providerItemID, "code", code)
	if err := s.markRevokeFailed(ctx, actor, row, providerItemID, code); err != nil {
		s.log.Error("record a failed revoke", "link_session", row.ID, "cause", err.Error())
	}
}

// markRevokeFailed records, with its audit entry, that the session's
// unstored token was never confirmed revoked. The audit entry names the
// session, provider and provider item id, never the token.
func (s *Service) markRevokeFailed(ctx context.Context, actor audit.Actor, row sessionRow, providerItemID, code string) error {
	ext, err := vault.SubjectKey(ctx, s.db.Pool, row.SubjectID)
	if err != nil && kluis.ErrorCode(err) != kluis.ENotFound {
		return err
	}
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE link_sessions SET revoke_failed_at = $2, updated_at = $2 WHERE id = $1`,
			row.ID, s.now()); err != nil {
			return dbErr("mark link session revoke failed", err)
		}
		return s.audit.Append(ctx, tx, audit.Entry{
			ActorKind: actor.Kind, Actor: actor.Name, Action: "item.revoke_failed", Target: row.ID,
			Outcome: audit.OutcomeFailure, Subject: ext, RequestID: actor.RequestID,
			Details: map[string]any{"link_session": row.ID, "provider": row.Provider, "provider_item_id": providerItemID, "code": code},
		})
	})
}

// extendClaim moves the session's exchange lease to until, while the
// exchange for hash still holds it.
func extendClaim(ctx context.Context, q querier, id string, hash []byte, until time.Time) error {
	if _, err := q.Exec(ctx, `UPDATE link_sessions SET exchange_claimed_until = GREATEST(exchange_claimed_until, $3)
		WHERE id = $1 AND status = 'succeeded' AND public_token_hash = $2 AND exchange_claimed_until IS NOT NULL`,
		id, hash, until); err != nil {
		return dbErr("extend link session lease", err)
	}
	return nil
}

// revokeFailedSessions lists the subject's sessions whose unstored token
// was never confirmed revoked, as unrevoked items for an erasure (the id is
// the link session's).
func revokeFailedSessions(ctx context.Context, q querier, subjectID string) ([]compliance.UnrevokedItem, error) {
	rows, err := q.Query(ctx, `SELECT id, provider FROM link_sessions WHERE subject_id = $1 AND revoke_failed_at IS NOT NULL ORDER BY id`, subjectID)
	if err != nil {
		return nil, dbErr("list revoke-failed link sessions", err)
	}
	defer rows.Close()
	var out []compliance.UnrevokedItem
	for rows.Next() {
		u := compliance.UnrevokedItem{Reason: ReasonRevokeFailed}
		if err := rows.Scan(&u.ItemID, &u.Provider); err != nil {
			return nil, dbErr("list revoke-failed link sessions", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("list revoke-failed link sessions", err)
	}
	return out, nil
}
