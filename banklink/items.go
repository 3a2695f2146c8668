package banklink

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/compliance"
)

// Items lists the subject's items (removed ones are gone) with their
// accounts.
func (s *Service) Items(ctx context.Context, sub string) ([]Item, error) {
	subjectID, err := s.subjectOf(ctx, sub)
	if kluis.ErrorCode(err) == kluis.ENotFound {
		return []Item{}, nil
	}
	if err != nil {
		return nil, err
	}
	items, err := listItems(ctx, s.db.Pool, subjectID)
	if err != nil {
		return nil, err
	}
	if err := s.withAccounts(ctx, s.db.Pool, items); err != nil {
		return nil, err
	}
	return items, nil
}

// Item returns the subject's item with its accounts; another subject's
// item, a removed one and an unknown id are all the same ENotFound.
func (s *Service) Item(ctx context.Context, sub, id string) (Item, error) {
	if !kluis.ValidID(kluis.PrefixItem, id) {
		return Item{}, notFound()
	}
	subjectID, err := s.subjectOf(ctx, sub)
	if err != nil {
		return Item{}, err
	}
	it, err := getItem(ctx, s.db.Pool, id, subjectID, false)
	if err != nil {
		return Item{}, err
	}
	return s.oneWithAccounts(ctx, it)
}

// InternalItem returns any live item, for internal services (with its
// credential reference and its accounts' number references).
func (s *Service) InternalItem(ctx context.Context, id string) (Item, error) {
	if !kluis.ValidID(kluis.PrefixItem, id) {
		return Item{}, notFound()
	}
	it, err := anyItem(ctx, s.db.Pool, id)
	if err != nil {
		return Item{}, err
	}
	return s.oneWithAccounts(ctx, it)
}

// oneWithAccounts fills in one item's live accounts.
func (s *Service) oneWithAccounts(ctx context.Context, it Item) (Item, error) {
	items := []Item{it}
	if err := s.withAccounts(ctx, s.db.Pool, items); err != nil {
		return Item{}, err
	}
	return items[0], nil
}

// Accounts lists the subject's accounts, linked and manual.
func (s *Service) Accounts(ctx context.Context, sub string) ([]Account, error) {
	subjectID, err := s.subjectOf(ctx, sub)
	if kluis.ErrorCode(err) == kluis.ENotFound {
		return []Account{}, nil
	}
	if err != nil {
		return nil, err
	}
	return listAccounts(ctx, s.db.Pool, subjectID)
}

// Account returns the subject's account; another subject's is ENotFound.
func (s *Service) Account(ctx context.Context, sub, id string) (Account, error) {
	if !kluis.ValidID(kluis.PrefixAccount, id) {
		return Account{}, notFound()
	}
	subjectID, err := s.subjectOf(ctx, sub)
	if err != nil {
		return Account{}, err
	}
	return getAccount(ctx, s.db.Pool, id, subjectID)
}

// InternalAccount returns any live account, for internal services.
func (s *Service) InternalAccount(ctx context.Context, id string) (Account, error) {
	if !kluis.ValidID(kluis.PrefixAccount, id) {
		return Account{}, notFound()
	}
	return anyAccount(ctx, s.db.Pool, id)
}

// DeleteItem unlinks the subject's item: access is revoked at the provider
// first (a provider that cannot be reached fails the call and changes
// nothing), then the item is removed and its credentials (the access token
// and its accounts' numbers) destroyed, in one transaction with the audit
// entry. A token the provider no longer knows (the user revoked it there)
// counts as revoked.
func (s *Service) DeleteItem(ctx context.Context, actor Actor, id string) error {
	it, err := s.Item(ctx, actor.Name, id)
	if err != nil {
		return err
	}
	return s.removeItem(ctx, actor, actor.Name, it)
}

// removeItem revokes the item at the provider first (a token the provider no
// longer knows counts as revoked), then marks it removed and destroys its
// credentials, with its audit entry, in one transaction. A provider that
// cannot be reached leaves everything as it was.
func (s *Service) removeItem(ctx context.Context, actor Actor, externalSub string, it Item) error {
	if it.CredentialRef != "" {
		token, err := s.accessToken(ctx, it.ID, it.CredentialRef)
		if err != nil {
			return err
		}
		if err := s.provider.RemoveItem(ctx, token); err != nil && kluis.ErrorCode(err) != CodeInvalidToken {
			return providerErr("remove item", err)
		}
	}
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		refs, ok, err := markItemRemoved(ctx, tx, it.ID, it.Status, it.CredentialRef, s.now())
		if err != nil {
			return err
		}
		if !ok {
			return kluis.Errorf(kluis.EConflict, "the item changed while it was being removed; try again")
		}
		destroyed := 0
		for _, ref := range append(refs, it.CredentialRef) {
			if ref == "" {
				continue
			}
			if err := s.vault.Destroy(ctx, tx, ref); err != nil && kluis.ErrorCode(err) != kluis.ENotFound {
				return err
			}
			destroyed++
		}
		return s.appendAudit(ctx, tx, actor, "item.removed", it.ID, externalSub, map[string]any{
			"from": it.Status, "credentials_destroyed": destroyed, "provider": it.Provider})
	})
}

// RevokeSubject revokes at the provider every item of the subject (internal
// id) that is not removed yet, and marks them removed, for erasure: access
// must be withdrawn at the bank before the subject's keys are shredded, or a
// token would outlive kluis's ability to revoke it. It is idempotent (removed
// items are skipped) and fails with EUnavailable while the provider is down,
// so that erasure waits and retries. It returns how many items it revoked.
func (s *Service) RevokeSubject(ctx context.Context, subjectID string) (int, error) {
	items, err := listItems(ctx, s.db.Pool, subjectID)
	if err != nil {
		return 0, err
	}
	ext, err := externalSubject(ctx, s.db.Pool, subjectID)
	if err != nil && kluis.ErrorCode(err) != kluis.ENotFound {
		return 0, err
	}
	actor := Actor{Kind: compliance.ActorSystem, Name: "erasure"}
	for i, it := range items {
		if err := s.removeItem(ctx, actor, ext, it); err != nil {
			return i, fmt.Errorf("banklink: revoke subject: %w", err)
		}
	}
	return len(items), nil
}
