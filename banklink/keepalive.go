package banklink

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
)

// JobTokenKeepAlive is the job that renews idle refresh tokens.
const JobTokenKeepAlive = "bank-token-keepalive"

// KeepAliveResult counts what a keep-alive run did.
type KeepAliveResult struct {
	// Renewed counts items whose refresh token was spent for a new pair,
	// now current; Finished, renewals a cut-short run had left pending.
	Renewed, Finished int
	// RelinkRequired counts items whose token kluis found it had lost;
	// LoginRequired, renewed items whose bank asked the user to authorize
	// again when the new token was first used.
	RelinkRequired, LoginRequired int
	Failed                        int
}

// KeepAliveTokens renews the refresh tokens of items whose provider's
// tokens expire (ExpiringTokens: Stitch, whose refresh tokens die after a
// sliding period unused, 365 days) and that no refresh has renewed for
// idle (up to batch items). Without it an item nobody reveals for that
// long would die at the provider while kluis still shows it active.
//
// Each renewal is the one every refresh goes through (rotateClaimed): it
// takes the item's token lease only while the item is still idle (a
// conditional UPDATE on access_token_rotated_at), so a reveal renewing the
// token meanwhile, on any instance, makes the job skip it, and a reveal
// that comes while the job holds the lease waits for its result: one
// refresh token is never spent twice. The new pair is sealed and
// committed before it is current; a lost answer or a spent token leaves
// the item relink_required with its event. The new user token is then
// used once (the item's accounts are read): Stitch asks for
// reauthorization when a token refreshed but unused for a year is used,
// so renewing alone would not keep the item alive; a bank that asks the
// user to authorize again makes the item login_required (update mode
// repairs it). idle <= 0 renews nothing.
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
		outcome, err := s.keepAlive(ctx, id, cutoff)
		if err != nil {
			res.Failed++
			s.log.Warn("refresh token keep-alive failed; the next run retries", "item_id", id,
				"code", kluis.ErrorCode(err), "cause", err.Error())
			continue
		}
		switch outcome {
		case rotated:
			res.Renewed++
			if s.useRenewed(ctx, id) {
				res.LoginRequired++
			}
		case finished:
			res.Finished++
		case relink:
			res.RelinkRequired++
		}
	}
	return res, nil
}

// keepAlive renews one item's token as rotateItem does, under the short
// lease of a reveal's refresh (refreshLease), so that an instance dying
// mid-renewal holds up the item's reveals for a minute, not for the
// rotation job's lease. The claim is taken only while the item is still
// idle since cutoff.
func (s *Service) keepAlive(ctx context.Context, id string, cutoff time.Time) (rotationOutcome, error) {
	until := s.now().Add(refreshLease)
	resumed, ok, err := claimToken(ctx, s.db.Pool, id, s.now(), until, &cutoff)
	if err != nil || !ok {
		return skipped, err
	}
	defer s.expireLease(ctx, id, until)
	return s.rotateClaimed(ctx, id, until, resumed)
}

// keepAliveActor is the audit actor of the keep-alive job.
var keepAliveActor = audit.Actor{Kind: audit.ActorSystem, Name: JobTokenKeepAlive}

// useRenewed makes one request with the item's renewed token (its
// accounts), and reports whether the bank asked for the user's
// authorization, in which case the item is now login_required with its
// event. Other failures are logged: the renewal itself stands.
func (s *Service) useRenewed(ctx context.Context, id string) bool {
	it, err := anyItem(ctx, s.db.Pool, id)
	if err != nil {
		return false
	}
	p, err := s.providers.Provider(it.Provider)
	if err != nil {
		return false
	}
	token, err := s.accessToken(ctx, it.ID, it.CredentialRef)
	if err != nil {
		return false
	}
	callCtx, cancel := context.WithTimeout(ctx, providerCallTimeout)
	_, err = p.GetAccounts(callCtx, token)
	cancel()
	switch kluis.ErrorCode(err) {
	case "":
		return false
	case CodeItemLoginRequired:
	default:
		s.log.Warn("a renewed token could not be used; the next reveal uses it", "item_id", id, "code", kluis.ErrorCode(err))
		return false
	}
	err = s.markLoginBroke(ctx, it, keepAliveActor)
	if err != nil {
		s.log.Error("mark item login_required", "item_id", id, "cause", err.Error())
	}
	return true
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
