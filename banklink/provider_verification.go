package banklink

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// AccountVerifications hears, in the transaction that records it, a bank
// provider's word on a linked account's own micro-deposit verification
// (Plaid's Same Day and Automated Micro-deposits): providerStatus is the
// provider's verification_status. verification.Service implements it; its
// errors roll the transaction back.
type AccountVerifications interface {
	ProviderReported(ctx context.Context, tx pgx.Tx, provider, accountID, providerStatus string) error
}

// SetAccountVerifications connects the verification feature, which is
// built after bank linking (it asks bank linking about items). Call it
// before serving; without it, providers' verification statuses are only
// recorded on the accounts.
func (s *Service) SetAccountVerifications(v AccountVerifications) { s.verifications = v }

// reportProviderStatus tells the verification feature the provider's
// status of one account, in tx.
func (s *Service) reportProviderStatus(ctx context.Context, tx pgx.Tx, provider, accountID, status string) error {
	if s.verifications == nil || status == "" {
		return nil
	}
	return s.verifications.ProviderReported(ctx, tx, provider, accountID, status)
}

// refreshProviderStatuses records, for the item's accounts kluis holds,
// the verification_status the provider gave now (accts: its latest
// accounts read), and reports each that changed: how the user's
// confirmation in Link's update mode (manually_verified) or the provider's
// own check reaches kluis. An account the provider gave no status keeps
// its own.
func (s *Service) refreshProviderStatuses(ctx context.Context, tx pgx.Tx, it Item, accts []ProviderAccount) error {
	for _, pa := range accts {
		if pa.VerificationStatus == "" || pa.ProviderAccountID == "" {
			continue
		}
		accountID, changed, err := setProviderVerification(ctx, tx, it.ID, pa.ProviderAccountID, pa.VerificationStatus, s.now())
		if err != nil {
			return err
		}
		if changed {
			if err := s.reportProviderStatus(ctx, tx, it.Provider, accountID, pa.VerificationStatus); err != nil {
				return err
			}
		}
	}
	return nil
}
