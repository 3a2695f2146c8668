package banklink

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
)

// JobTokenKeepAlive is the job that renews idle refresh tokens.
const JobTokenKeepAlive = "bank-token-keepalive"

// KeepAliveResult counts what a keep-alive run did.
type KeepAliveResult struct {
	// Renewed counts items whose refresh token was spent for a new pair,
	// now current; Finished, renewals a cut-short run had left pending.
	Renewed, Finished int
	// RelinkRequired counts items whose token kluis found it had lost.
	RelinkRequired int
	Failed         int
}

// KeepAliveTokens renews the refresh tokens of items whose provider's
// tokens expire (ExpiringTokens: Stitch, whose refresh tokens die after a
// sliding period unused, 365 days) and that no refresh has renewed for
// idle (up to batch items). Without it an item nobody reveals for that
// long would die at the provider while kluis still shows it active.
//
// Each renewal is the one every refresh goes through (rotateItem): it
// takes the item's token lease only while the item is still idle (a
// conditional UPDATE on access_token_rotated_at), so a reveal renewing the
// token meanwhile, on any instance, makes the job skip it, and a reveal
// that comes while the job holds the lease waits for its result: one
// refresh token is never spent twice. The new pair is sealed and
// committed before it is current; a lost answer or a spent token leaves
// the item relink_required with its event. idle <= 0 renews nothing.
func (s *Service) KeepAliveTokens(ctx context.Context, idle time.Duration, batch int) (KeepAliveResult, error) {
	var res KeepAliveResult
	if idle <= 0 {
		return res, nil
	}
	if batch <= 0 {
		batch = DefaultRotationBatch
	}
	var providers []string
	for _, name := range s.providers.Names() {
		if s.expiring(name) {
			providers = append(providers, name)
		}
	}
	if len(providers) == 0 {
		return res, nil
	}
	now := s.now()
	cutoff := now.Add(-idle)
	ids, err := idleItems(ctx, s.db.Pool, providers, now, cutoff, batch)
	if err != nil {
		return res, err
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		outcome, err := s.rotateItem(ctx, id, cutoff)
		if err != nil {
			res.Failed++
			s.log.Warn("refresh token keep-alive failed; the next run retries", "item_id", id,
				"code", kluis.ErrorCode(err), "cause", err.Error())
			continue
		}
		switch outcome {
		case rotated:
			res.Renewed++
		case finished:
			res.Finished++
		case relink:
			res.RelinkRequired++
		}
	}
	return res, nil
}

// idleItems lists live items of providers whose token no refresh has
// renewed since cutoff (or whose renewal was cut short), the idlest first.
func idleItems(ctx context.Context, q querier, providers []string, now, cutoff time.Time, limit int) ([]string, error) {
	rows, err := q.Query(ctx, `
		SELECT id FROM items
		WHERE status IN ('active', 'login_required') AND provider = ANY($1)
		  AND (rotation_claimed_until < $2 OR (rotation_claimed_until IS NULL
		       AND (pending_credential_ref IS NOT NULL OR access_token_rotated_at < $3)))
		ORDER BY access_token_rotated_at LIMIT $4`, providers, now, cutoff, limit)
	if err != nil {
		return nil, dbErr("list idle items", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, dbErr("list idle items", err)
	}
	return ids, nil
}
