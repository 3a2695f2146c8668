package vault

import (
	"context"
	"fmt"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// Owner types (credentials.owner_type): the object a credential belongs to.
const (
	// OwnerItem owns a bank_access_token: the item's access token.
	OwnerItem = "item"
	// OwnerAccount owns an account_number (the account's numbers) and an
	// id_number (its holder's ID number).
	OwnerAccount = "account"
)

// EIntegrity is the error code of a credential that is not where its
// pointer says, or whose record does not authenticate where it lies: a
// pointer and a credential that disagree, a ciphertext moved to another
// row, an owner column edited. The API answers it as 500 `internal` with
// reason `integrity`; its message says nothing more.
const EIntegrity = "integrity"

// Owner is the object that owns a credential: an item (its access token) or
// an account (its numbers). From envelope format version 2 on it is bound
// into the record's AAD, so a record opens only for the owner it was sealed
// for.
type Owner struct {
	Type string
	ID   string
}

// ItemOwner is the owner of an item's access token.
func ItemOwner(itemID string) Owner { return Owner{Type: OwnerItem, ID: itemID} }

// AccountOwner is the owner of an account's numbers.
func AccountOwner(accountID string) Owner { return Owner{Type: OwnerAccount, ID: accountID} }

// String names the owner as "item/itm_…" or "account/acc_…" (identifiers
// only, safe for logs and audit details).
func (o Owner) String() string { return o.Type + "/" + o.ID }

// IsZero says whether no owner is known (a record sealed before owners were
// recorded that no pointer referred to when they were).
func (o Owner) IsZero() bool { return o == Owner{} }

// Valid says whether o is a well-formed owner: a known type and an id of
// that type's kind.
func (o Owner) Valid() bool {
	switch o.Type {
	case OwnerItem:
		return kluis.ValidID(kluis.PrefixItem, o.ID)
	case OwnerAccount:
		return kluis.ValidID(kluis.PrefixAccount, o.ID)
	}
	return false
}

// OwnerPointers says which owners point at a credential. The items and
// accounts tables, where the pointers live, belong to bank linking; the
// vault asks through this port (banklink.Service implements it). q is the
// caller's pool or transaction. It returns every live owner whose pointer
// names ref, in no particular order, or an error from the database.
type OwnerPointers interface {
	PointersTo(ctx context.Context, q postgres.Querier, ref string) ([]Owner, error)
}

// CheckPointers returns an integrity error unless exactly one owner points
// at ref and it is owner: a second pointer (another account made to point
// at this credential) or none (the owner column edited to name an owner
// that does not point here) is a disagreement.
func CheckPointers(ctx context.Context, p OwnerPointers, q postgres.Querier, ref string, owner Owner) error {
	if p == nil {
		return kluis.Errorf(kluis.EInternal, "internal error")
	}
	owners, err := p.PointersTo(ctx, q, ref)
	if err != nil {
		return err
	}
	if len(owners) != 1 || owners[0] != owner {
		return integrityError(fmt.Errorf("vault: credential %s of %s is pointed at by %v", ref, owner, owners))
	}
	return nil
}

// integrityError is EIntegrity keeping cause (identifiers only) for logs.
func integrityError(cause error) error {
	return kluis.Wrap(EIntegrity, "internal error", cause)
}
