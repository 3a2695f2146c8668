package verification

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
)

// providerRailRef is the rail_ref of a provider-checked verification: the
// deposits went over the provider's own rail, which kluis does not poll
// (the provider reports through ProviderReported).
const providerRailRef = "provider"

// startProviderChecked answers a start on a linked account whose bank
// provider verifies it by its own micro-deposits (Plaid's Same Day or
// Automated Micro-deposits, chosen by the user in Link): kluis sends
// nothing, and the verification stands where the provider's status says
// (ProviderStatus). One the provider already ended unverified is a
// conflict: the user must link the account again, as Plaid asks.
func (s *Service) startProviderChecked(ctx context.Context, actor audit.Actor, a Account, requested string, target Status) (Verification, error) {
	if target == StatusFailed || target == StatusExpired {
		return Verification{}, kluis.Errorf(kluis.EConflict,
			"the bank's own micro-deposit verification of this account ended %s: link the account again", target).With("status", string(target))
	}
	var v Verification
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		v, err = s.openProviderChecked(ctx, tx, actor, a, requested, target)
		return err
	})
	if err != nil {
		return Verification{}, err
	}
	s.notified()
	return v, nil
}

// openProviderChecked inserts a provider-checked verification of a and
// moves it to target, in tx. An account with an open verification already
// is the usual conflict, naming it.
func (s *Service) openProviderChecked(ctx context.Context, tx pgx.Tx, actor audit.Actor, a Account, requested string, target Status) (Verification, error) {
	v := s.newVerification(a, requested, MethodMicroDeposits)
	v.AnswerKind, v.ProviderChecked = "", true
	if err := s.insert(ctx, tx, actor, v, nil); err != nil {
		return Verification{}, err
	}
	return s.advanceProvider(ctx, tx, actor, v, target)
}

// advanceProvider applies, in tx, the transitions that take v to the
// status the provider reports (ProviderPath), each a conditional update
// with its audit entry and event. A row that changed meanwhile is read
// again and left where it stands.
func (s *Service) advanceProvider(ctx context.Context, tx pgx.Tx, actor audit.Actor, v Verification, target Status) (Verification, error) {
	for _, ev := range ProviderPath(v.Status, target) {
		got, ok, err := s.applyOrReread(ctx, tx, v, ev, providerRailRef, actor)
		if err != nil || !ok {
			return got, err
		}
		v = got
	}
	return v, nil
}

// ProviderReported applies, in tx (the transaction that records it), what
// a linked account's bank provider says of its own micro-deposits:
// providerStatus is the provider's verification_status (Plaid's), from a
// link, an update-mode session, the completion job or an AUTH webhook. The
// account's open provider-checked verification moves to the status it
// stands for (ProviderStatus), or, when none is open and the provider has
// started (or finished) verifying the account, one is opened, so that the
// account shows as pending in kluis and its verified, failed or expired end
// reaches the apps as the usual verification.* event. A status that is no
// micro-deposit verification changes nothing, and neither does one for an
// account whose open verification is kluis's own (over a rail), a verified
// or revoked account, or a subject being erased. The same status again
// does nothing: every step is a conditional transition.
func (s *Service) ProviderReported(ctx context.Context, tx pgx.Tx, provider, accountID, providerStatus string) error {
	target, ok := ProviderStatus(providerStatus)
	if !ok {
		return nil
	}
	actor := audit.Actor{Kind: audit.ActorProvider, Name: provider}
	v, err := scanVerification(tx.QueryRow(ctx, `SELECT `+verificationColumns+` FROM verifications
		WHERE account_id = $1 AND status IN ('pending', 'sent', 'posted') FOR UPDATE`, accountID))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return dbErr("read verification", err)
	case !v.ProviderChecked:
		return nil
	default:
		_, err = s.advanceProvider(ctx, tx, actor, v, target)
		return err
	}
	if target == StatusFailed || target == StatusExpired {
		return nil // nothing open to end; the account's provider status says it
	}
	a, err := s.accounts.AccountByID(ctx, tx, accountID)
	if err != nil || a.VerificationStatus == AccountVerified || a.Revoked {
		return err
	}
	_, err = s.openProviderChecked(ctx, tx, actor, a, MethodMicroDeposits, target)
	if code := kluis.ErrorCode(err); code == kluis.ESubjectErasing || code == kluis.EConflict {
		return nil // being erased, or opened meanwhile: nothing for the provider to retry
	}
	return err
}
