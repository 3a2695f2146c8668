package verification

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
)

// Job names, as registered with the scheduler.
const (
	JobExpiry   = "verification-expiry"
	JobRailPoll = "verification-rail-poll"
)

// sweepBatch bounds the rows one pass of a job reads at a time.
const sweepBatch = 200

// ExpireDue expires every open verification past its window, in batches,
// and returns how many it expired. Each is its own transition (conditional
// update, audit entry, event) in its own transaction. A provider-checked
// verification is not kluis's to expire: its deposits are the provider's,
// on the provider's clock (Plaid's Automated Micro-deposits end seven days
// after the deposit; Same Day ones wait for the user), so it ends only when
// the provider says so (ProviderReported: an AUTH webhook, or the
// account's verification_status read again).
func (s *Service) ExpireDue(ctx context.Context) (int, error) {
	actor := audit.System(JobExpiry)
	total := 0
	for {
		batch, err := due(ctx, s.db, `status IN ('pending', 'sent', 'posted') AND NOT provider_checked AND expires_at <= $1 ORDER BY expires_at`, sweepBatch, s.now())
		if err != nil {
			return total, err
		}
		n := 0
		for _, v := range batch {
			got, err := s.expire(ctx, actor, v)
			if err != nil && kluis.ErrorCode(err) != kluis.EConflict {
				return total, err
			}
			if err == nil && got.Status == StatusExpired {
				n++
			}
		}
		total += n
		if len(batch) < sweepBatch || n == 0 || ctx.Err() != nil {
			return total, ctx.Err()
		}
	}
}

// PollResult counts what a rail poll did.
type PollResult struct {
	Posted, Returned, Resent int
}

// PollRail asks the rail about every sent or posted verification still in
// its window and applies what it learns (posted, returned), and sends again
// the deposits of verifications left pending longer than ResendAfter (their
// first send failed): with new amounts, since the old ones are known only
// by their MAC.
func (s *Service) PollRail(ctx context.Context) (PollResult, error) {
	var res PollResult
	if len(s.railsByName) == 0 {
		return res, nil
	}
	actor := audit.System(JobRailPoll)
	now := s.now()
	after := ""
	for {
		batch, err := due(ctx, s.db, `status IN ('sent', 'posted') AND expires_at > $1 AND id > $2 ORDER BY id`, sweepBatch, now, after)
		if err != nil {
			return res, err
		}
		for _, v := range batch {
			after = v.ID
			got, err := s.refresh(ctx, actor, v)
			if err != nil {
				return res, err
			}
			switch {
			case got.Status == StatusPosted && v.Status == StatusSent:
				res.Posted++
			case got.Status == StatusReturned && v.Status != StatusReturned:
				res.Returned++
			}
		}
		if len(batch) < sweepBatch || ctx.Err() != nil {
			break
		}
	}
	stuck, err := due(ctx, s.db, `status = 'pending' AND method = 'micro_deposits' AND NOT provider_checked AND updated_at <= $1 AND expires_at > $2 ORDER BY updated_at`,
		sweepBatch, now.Add(-s.resendAfter), now)
	if err != nil {
		return res, err
	}
	for _, v := range stuck {
		ok, err := s.resend(ctx, actor, v)
		if err != nil {
			// One verification that cannot be sent must not hold up the
			// others: it is tried again on the next run.
			s.log.Warn("resending deposits failed", "verification_id", v.ID, "code", kluis.ErrorCode(err))
			continue
		}
		if ok {
			res.Resent++
		}
	}
	return res, ctx.Err()
}

// resend draws new deposits for a pending verification, replaces its MAC
// (conditionally: only while it is still pending and unchanged), and sends.
func (s *Service) resend(ctx context.Context, actor audit.Actor, v Verification) (bool, error) {
	amounts, code, err := s.deposits()
	if err != nil {
		return false, err
	}
	defer clear(amounts)
	mac, err := s.secretMAC(v.ID, amounts, code)
	if err != nil {
		return false, err
	}
	var a Account
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE verifications SET answer_mac = $3, updated_at = $4
			WHERE id = $1 AND status = 'pending' AND updated_at = $2`, v.ID, v.UpdatedAt, mac, s.now())
		if err != nil {
			return dbErr("renew deposits", err)
		}
		if tag.RowsAffected() == 0 {
			return errSkip
		}
		if a, err = s.account(ctx, tx, v.AccountID, v.SubjectID); err != nil {
			return err
		}
		return nil
	})
	if errors.Is(err, errSkip) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	_, err = s.send(ctx, actor, v, a, amounts, code)
	return err == nil, err
}

var errSkip = errors.New("verification: changed meanwhile")
