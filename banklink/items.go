package banklink

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/vault"
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
// first, with every version of its token that may be live there (the
// current one and a rotation's pending successor), then the item is
// removed and its credentials (the access token and its accounts' numbers)
// destroyed, in one transaction with the audit entry, which records
// whether the provider revoked. providerRevoked is false when the provider
// could not: every token was already dead there (an item whose token kluis
// lost, relink_required, is not asked at all); kluis removes the item
// either way. A provider that cannot be reached or refuses fails the call
// and changes nothing.
func (s *Service) DeleteItem(ctx context.Context, actor Actor, id string) (providerRevoked bool, err error) {
	it, err := s.Item(ctx, actor.Name, id)
	if err != nil {
		return false, err
	}
	return s.removeItem(ctx, actor, actor.Name, it)
}

// removeItem holds the item's token lease while it revokes at the provider
// (so no rotation changes the token meanwhile), then marks the item removed
// and destroys its credentials, with its audit entry, in one transaction.
// A consent the user withdrew at the provider (revoked) counts as revoked
// there; a token kluis lost (relink_required) cannot be revoked.
func (s *Service) removeItem(ctx context.Context, actor Actor, externalSub string, it Item) (bool, error) {
	until := s.now().Add(tokenLease)
	_, claimed, err := claimToken(ctx, s.db.Pool, it.ID, s.now(), until, nil)
	if err != nil {
		return false, err
	}
	if !claimed {
		return false, kluis.Errorf(kluis.EConflict, "the item's access token is being rotated; try again shortly")
	}
	release := func() {
		if err := releaseToken(context.WithoutCancel(ctx), s.db.Pool, it.ID, until); err != nil {
			s.log.Error("release item token lease", "item_id", it.ID, "cause", err.Error())
		}
	}
	var versions vault.Versions
	providerRevoked := it.Status == ItemRevoked
	if it.Status != ItemRevoked && it.Status != ItemRelinkRequired {
		var tokens []liveToken
		if tokens, versions, err = s.liveTokens(ctx, it); err != nil {
			release()
			return false, err
		}
		if providerRevoked, err = s.revokeAtProvider(ctx, tokens); err != nil {
			release()
			return false, err
		}
	}
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		if err := s.sameVersions(ctx, tx, versions); err != nil {
			return err
		}
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
			"from": it.Status, "credentials_destroyed": destroyed, "provider": it.Provider,
			"provider_revoked": providerRevoked})
	})
	if err != nil {
		release()
		return false, err
	}
	return providerRevoked, nil
}

// RevokeSubject revokes at the provider every item of the subject (internal
// id) that is not removed yet, with every live version of its token, and
// marks them removed, for erasure: access must be withdrawn at the bank
// before the subject's keys are shredded, or a token would outlive kluis's
// ability to revoke it. It is idempotent (removed items are skipped) and
// fails with EUnavailable while the provider is down, so that erasure waits
// and retries. It returns how many items the provider revoked: an item
// whose token was already dead there (relink_required, or invalid at the
// provider) is removed but not counted, and its audit entry says so.
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
	revoked := 0
	for _, it := range items {
		ok, err := s.removeItem(ctx, actor, ext, it)
		if err != nil {
			return revoked, fmt.Errorf("banklink: revoke subject: %w", err)
		}
		if ok {
			revoked++
		}
	}
	return revoked, nil
}
