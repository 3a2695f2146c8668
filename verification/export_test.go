package verification

import (
	"context"
)

// OpenBankDetails exposes the BAV seam to the external tests: it reads the
// subject's account and opens its details.
func (s *Service) OpenBankDetails(ctx context.Context, subjectID, accountID string) (BankDetails, error) {
	a, err := s.account(ctx, s.db.Pool, accountID, subjectID)
	if err != nil {
		return BankDetails{}, err
	}
	return s.openBankDetails(ctx, s.db.Pool, a)
}
