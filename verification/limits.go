package verification

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
)

// Limits on guessing (docs/SECURITY.md, "Verification limits"). Each micro-deposit
// verification allows a few guesses of amounts the user cannot see unless
// they own the account; without limits, starting again and again (or from
// many accounts holding one number) turns those few guesses into as many
// as the attacker likes. So, within the lockout:
//
//   - an account with LockAfterFailures failed verifications is locked
//     (CodeLocked, 409), and so are the same user's other accounts with
//     the same number: one user adds at most LockAfterFailures failures to
//     a number, however many accounts they enter it under;
//   - an account number whose failed verifications, across users, plus
//     those of it still open reach NumberFailures is refused
//     (CodeNumberVelocity, 429): open ones count because each may still
//     fail, so concurrent starts cannot carry the failures past the limit.
//
// Instant verification proves ownership without guessing and is never
// limited here. The counts are read after the new verification's row is
// inserted, in its transaction, under a lock per account number: starts of
// one number are serialized, and a verification failing at the same time
// has either committed (its failure row is seen) or still holds the
// account's open slot (the insert waits for it, or conflicts).

// failureCounts is what the limits read, in one snapshot, for a new
// verification (whose own row is among the open ones).
type failureCounts struct {
	account, userNumber, userNumberOpen, number, numberOpen int
}

// lockNumber serializes starts of verifications of one account number
// (by its blind index) until the transaction ends. An account without a
// number needs no lock: its one-open-verification index serializes it.
func lockNumber(ctx context.Context, tx pgx.Tx, idx []byte) error {
	if idx == nil {
		return nil
	}
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('kluis/verification-number/' || encode($1::bytea, 'hex'), 0))`, idx)
	if err != nil {
		return dbErr("lock account number", err)
	}
	return nil
}

// checkLimits refuses the new verification v (already inserted in tx, its
// subject in app) when its account, the user's accounts of its number, or
// its number within the app has failed too often within the lockout.
//
// The velocity limit counts an account number's failures across the users
// of one app (docs/SECURITY.md), so that one app's users cannot lock a
// number for another app's: every verification and failure row records its
// subject's app (app_id, written at the start from the vault's answer), so
// that no count here reads the vault's subjects.
func (s *Service) checkLimits(ctx context.Context, tx pgx.Tx, v Verification, app string, idx []byte) error {
	since := s.now().Add(-s.lockout)
	var n failureCounts
	err := tx.QueryRow(ctx, `
		SELECT
		  (SELECT count(*) FROM verification_failures WHERE account_id = $1 AND failed_at > $4),
		  (SELECT count(*) FROM verification_failures WHERE subject_id = $2 AND number_index = $3 AND failed_at > $4),
		  (SELECT count(*) FROM verifications WHERE subject_id = $2 AND number_index = $3 AND status IN ('pending', 'sent', 'posted')),
		  (SELECT count(*) FROM verification_failures WHERE app_id = $5 AND number_index = $3 AND failed_at > $4),
		  (SELECT count(*) FROM verifications WHERE app_id = $5 AND number_index = $3 AND status IN ('pending', 'sent', 'posted'))`,
		v.AccountID, v.SubjectID, idx, since, app).
		Scan(&n.account, &n.userNumber, &n.userNumberOpen, &n.number, &n.numberOpen)
	if err != nil {
		return dbErr("count failed verifications", err)
	}
	switch {
	case n.account >= LockAfterFailures:
		return s.locked(ctx, tx, `account_id = $1`, v.AccountID)
	case idx != nil && n.userNumber >= LockAfterFailures:
		return s.locked(ctx, tx, `subject_id = $1 AND number_index = $2`, v.SubjectID, idx)
	case idx != nil && n.userNumber+n.userNumberOpen > LockAfterFailures:
		return kluis.Errorf(kluis.EConflict, "a verification of another account with this account number is in progress")
	case idx != nil && n.number+n.numberOpen > s.numberFails:
		return s.velocity(ctx, tx, v.ID, app, idx, n)
	}
	return nil
}

// locked is the 409 for a locked account, saying when the lock lifts: when
// the LockAfterFailures-th newest failure (of the rows where selects)
// leaves the lockout period.
func (s *Service) locked(ctx context.Context, tx pgx.Tx, where string, args ...any) error {
	e := kluis.Errorf(CodeLocked, "this account failed verification too often; it cannot be verified by micro-deposits again until the lock lifts (instant verification stays open)")
	at, err := nthNewestFailure(ctx, tx, where, LockAfterFailures, args...)
	if err != nil {
		return err
	}
	if !at.IsZero() {
		e = e.With("locked_until", at.Add(s.lockout).UTC().Format(time.RFC3339))
	}
	return e
}

// velocity is the 429 for an account number with too many failed (or
// open) verifications, with the time until one slot frees: the oldest
// failure that must leave the lockout period, or the soonest an open
// verification of the number ends by its deadline.
func (s *Service) velocity(ctx context.Context, tx pgx.Tx, newID, app string, idx []byte, n failureCounts) error {
	var free time.Time
	// Slots used besides the new verification: failures, and opens
	// other than it. One must go: the (limit - opens)-th newest failure.
	if k := s.numberFails - (n.numberOpen - 1); k >= 1 && k <= n.number {
		at, err := nthNewestFailure(ctx, tx, `app_id = $2 AND number_index = $1`, k, idx, app)
		if err != nil {
			return err
		}
		free = at.Add(s.lockout)
	}
	var soonest *time.Time
	if err := tx.QueryRow(ctx, `SELECT min(expires_at) FROM verifications WHERE app_id = $3 AND number_index = $1 AND id <> $2
		AND status IN ('pending', 'sent', 'posted')`, idx, newID, app).Scan(&soonest); err != nil {
		return dbErr("read open verifications", err)
	}
	if soonest != nil && (free.IsZero() || soonest.Before(free)) {
		free = *soonest
	}
	wait := max(free.Sub(s.now()), time.Second)
	return kluis.Errorf(CodeNumberVelocity, "this account number failed verification too often; try again later").
		With("retry_after_seconds", int((wait+time.Second-1)/time.Second))
}

// nthNewestFailure returns the failed_at of the n-th newest failure (1 is
// the newest) among the rows where selects ($1… are args), or zero.
func nthNewestFailure(ctx context.Context, tx pgx.Tx, where string, n int, args ...any) (time.Time, error) {
	var at time.Time
	err := tx.QueryRow(ctx, `SELECT failed_at FROM verification_failures WHERE `+where+
		` ORDER BY failed_at DESC OFFSET `+strconv.Itoa(n-1)+` LIMIT 1`, args...).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, dbErr("read failed verifications", err)
	}
	return at, nil
}

// recordFailure counts a verification that has just failed, in the
// transaction of its transition: the failure exists exactly when the
// verification is failed, and only once.
func (s *Service) recordFailure(ctx context.Context, tx pgx.Tx, v Verification) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO verification_failures (verification_id, subject_id, account_id, number_index, app_id, failed_at)
		SELECT id, subject_id, account_id, number_index, app_id, $2 FROM verifications WHERE id = $1
		ON CONFLICT (verification_id) DO NOTHING`, v.ID, s.now())
	if err != nil {
		return dbErr("record failed verification", err)
	}
	return nil
}
