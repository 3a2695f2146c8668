package banklink

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/verification"
)

// AccountStore is bank linking's side of verification's Accounts port:
// the only way verification reads or changes the accounts and items tables,
// which bank linking owns. It needs no provider, so a kluis (or a test)
// that verifies only manual accounts has one too. Writes run in the
// caller's transaction, beside the verification's change and its audit
// entry.
type AccountStore struct{ db *postgres.DB }

var _ verification.Accounts = (*AccountStore)(nil)

// NewAccountStore returns the port's implementation over db.
func NewAccountStore(db *postgres.DB) *AccountStore { return &AccountStore{db: db} }

// verificationColumns are the account's columns as verification sees them.
const verificationColumns = `id, subject_id, COALESCE(item_id, ''), name, mask, type, subtype, verification_status,
	COALESCE(account_number_ref, ''), created_at, status = 'revoked', COALESCE(country, ''), COALESCE(bank_id, ''),
	COALESCE(holder_id_ref, ''), COALESCE(provider_verification_status, '')`

func scanVerificationAccount(r pgx.Row) (verification.Account, error) {
	var a verification.Account
	err := r.Scan(&a.ID, &a.SubjectID, &a.ItemID, &a.Name, &a.Mask, &a.Type, &a.Subtype, &a.VerificationStatus,
		&a.AccountNumberRef, &a.CreatedAt, &a.Revoked, &a.Country, &a.BankID, &a.HolderIDRef, &a.ProviderVerificationStatus)
	if err != nil {
		return verification.Account{}, dbErr("read account", err)
	}
	return a, nil
}

// Account reads the subject's live account; another subject's, and every
// account for an empty subjectID, is ENotFound.
func (s *AccountStore) Account(ctx context.Context, q postgres.Querier, id, subjectID string) (verification.Account, error) {
	if !kluis.ValidID(kluis.PrefixAccount, id) || subjectID == "" {
		return verification.Account{}, notFound()
	}
	return scanVerificationAccount(q.QueryRow(ctx, `SELECT `+verificationColumns+` FROM accounts
		WHERE id = $1 AND subject_id = $2 AND removed_at IS NULL`, id, subjectID))
}

// AccountByID reads a live account whoever owns it (a provider's report).
func (s *AccountStore) AccountByID(ctx context.Context, q postgres.Querier, id string) (verification.Account, error) {
	if !kluis.ValidID(kluis.PrefixAccount, id) {
		return verification.Account{}, notFound()
	}
	return scanVerificationAccount(q.QueryRow(ctx, `SELECT `+verificationColumns+` FROM accounts
		WHERE id = $1 AND removed_at IS NULL`, id))
}

// ItemProvider returns the provider a live item was linked through and its
// status; a removed or unknown item is ENotFound.
func (s *AccountStore) ItemProvider(ctx context.Context, itemID string) (provider, status string, err error) {
	if !kluis.ValidID(kluis.PrefixItem, itemID) {
		return "", "", notFound()
	}
	it, err := anyItem(ctx, s.db.Pool, itemID)
	if err != nil {
		return "", "", err
	}
	return it.Provider, it.Status, nil
}

// CreateManual inserts a manual account (no item, no provider) in tx.
func (s *AccountStore) CreateManual(ctx context.Context, tx pgx.Tx, a verification.Account) error {
	if a.ItemID != "" {
		return kluis.Wrap(kluis.EInternal, "internal error", errors.New("banklink: a manual account has no item"))
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO accounts (id, subject_id, name, mask, type, subtype, verification_status, account_number_ref,
		                      country, bank_id, holder_id_ref, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULLIF($10, ''), NULLIF($11, ''), $12, $12)`,
		a.ID, a.SubjectID, a.Name, a.Mask, a.Type, a.Subtype, a.VerificationStatus, a.AccountNumberRef,
		a.Country, a.BankID, a.HolderIDRef, a.CreatedAt); err != nil {
		return dbErr("insert account", err)
	}
	return nil
}

// FindManual returns the id of the subject's live manual account whose
// number is sealed under ref, of country and at bankID, or "".
func (s *AccountStore) FindManual(ctx context.Context, tx pgx.Tx, subjectID, ref, country, bankID string) (string, error) {
	var id string
	err := tx.QueryRow(ctx, `SELECT id FROM accounts WHERE account_number_ref = $1 AND subject_id = $2
		AND item_id IS NULL AND removed_at IS NULL AND country = $3 AND bank_id IS NOT DISTINCT FROM NULLIF($4, '')`,
		ref, subjectID, country, bankID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", dbErr("find manual account", err)
	}
	return id, nil
}

// SetVerificationStatus sets the account's verification status in tx: a
// verified account stays verified whatever later attempts do (unless
// verified again), and a revoked one is never changed.
func (s *AccountStore) SetVerificationStatus(ctx context.Context, tx pgx.Tx, accountID, status string, at time.Time) error {
	if _, err := tx.Exec(ctx, `UPDATE accounts SET verification_status = $2, updated_at = $3
		WHERE id = $1 AND (verification_status <> 'verified' OR $2 = 'verified') AND status <> 'revoked'`,
		accountID, status, at); err != nil {
		return dbErr("update account", err)
	}
	return nil
}
