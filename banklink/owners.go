package banklink

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
)

// PointersTo lists the live owners whose pointer names the credential ref:
// items by their access token (current or pending) and accounts (linked or
// manual) by their numbers or (a South African manual account) by their
// holder's ID number. Exactly one is right; two mean that a pointer
// was made to point at another owner's credential, none that the
// credential's owner column names someone who does not point at it. It
// implements vault.OwnerPointers, so that the vault can check a record
// whose format binds no owner without reading this feature's tables.
func (s *Service) PointersTo(ctx context.Context, q postgres.Querier, ref string) ([]vault.Owner, error) {
	if q == nil {
		q = s.db.Pool
	}
	rows, err := q.Query(ctx, `
		SELECT 'item', id FROM items
		WHERE (credential_ref = $1 OR pending_credential_ref = $1) AND status <> 'removed'
		UNION ALL
		SELECT 'account', id FROM accounts
		WHERE (account_number_ref = $1 OR holder_id_ref = $1) AND removed_at IS NULL`, ref)
	if err != nil {
		return nil, dbErr("read credential pointers", err)
	}
	owners, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (vault.Owner, error) {
		var o vault.Owner
		return o, r.Scan(&o.Type, &o.ID)
	})
	if err != nil {
		return nil, dbErr("read credential pointers", err)
	}
	return owners, nil
}

// OwnerCredential returns the credential ref that the live owner's pointer
// names: an item's access token or an account's numbers. An unknown,
// removed or malformed owner, and one with no credential (a linked account
// whose numbers the provider never gave), are ENotFound.
func (s *Service) OwnerCredential(ctx context.Context, owner vault.Owner) (string, error) {
	if !owner.Valid() {
		return "", notFound()
	}
	sql := `SELECT COALESCE(credential_ref, '') FROM items WHERE id = $1 AND status <> 'removed'`
	if owner.Type == vault.OwnerAccount {
		sql = `SELECT COALESCE(account_number_ref, '') FROM accounts WHERE id = $1 AND removed_at IS NULL`
	}
	var ref string
	if err := s.db.Pool.QueryRow(ctx, sql, owner.ID).Scan(&ref); err != nil {
		return "", dbErr("read credential pointer", err)
	}
	if ref == "" {
		return "", notFound()
	}
	return ref, nil
}

var _ vault.OwnerPointers = (*Service)(nil)
