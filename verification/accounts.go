package verification

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/postgres"
)

// Accounts is the port through which verification reaches the bank
// accounts it verifies. Bank linking owns the accounts and items tables
// (banklink.AccountStore implements it); verification names neither in
// SQL. Reads take the pool or the caller's transaction; writes take the
// caller's transaction, so an account's change commits or rolls back with
// the verification's own change and its audit entry. Errors are
// kluis.Error codes (ENotFound for an account that is not there).
type Accounts interface {
	// ItemProvider returns the provider a linked account's item was linked
	// through, which decides instant verification and the payment rail,
	// and the item's status; a removed or unknown item is ENotFound.
	ItemProvider(ctx context.Context, itemID string) (provider, status string, err error)
	// Account reads the subject's live (not removed) account: another
	// subject's, a removed or an unknown one, or any for an empty
	// subjectID, is ENotFound.
	Account(ctx context.Context, q postgres.Querier, id, subjectID string) (Account, error)
	// AccountByID reads a live account whoever owns it: for what a bank
	// provider reports about an account, never for a user's request.
	AccountByID(ctx context.Context, q postgres.Querier, id string) (Account, error)
	// CreateManual adds a manual account (one without an item) in tx: a's
	// ID, SubjectID, Name, Mask, Type, Subtype, VerificationStatus,
	// AccountNumberRef, Country, BankID, HolderIDRef and CreatedAt.
	CreateManual(ctx context.Context, tx pgx.Tx, a Account) error
	// FindManual returns the id of the subject's live manual account whose
	// number is sealed under ref, of country and at bankID ("" for none),
	// or "" when there is none.
	FindManual(ctx context.Context, tx pgx.Tx, subjectID, ref, country, bankID string) (string, error)
	// SetVerificationStatus sets the account's verification status in tx,
	// as one conditional update: a verified account stays verified unless
	// status is verified again, and a revoked one (consent withdrawn at the
	// provider) never changes. An account that matches none is no error.
	SetVerificationStatus(ctx context.Context, tx pgx.Tx, accountID, status string, at time.Time) error
}

// account reads the subject's live account through the port.
func (s *Service) account(ctx context.Context, q postgres.Querier, id, subjectID string) (Account, error) {
	return s.accounts.Account(ctx, q, id, subjectID)
}
