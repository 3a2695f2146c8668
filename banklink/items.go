package banklink

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/events"
	"github.com/kluis-dev/kluis/vault"
)

// Items lists one page of the subject's items (removed ones are gone) with
// their accounts, oldest first, and where the next page starts (nil after
// the last).
func (s *Service) Items(ctx context.Context, sub string, page Page) ([]Item, *Position, error) {
	subjectID, err := vault.LookupSubject(ctx, s.db.Pool, sub)
	if kluis.ErrorCode(err) == kluis.ENotFound {
		return []Item{}, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	items, err := listItems(ctx, s.db.Pool, subjectID, page)
	if err != nil {
		return nil, nil, err
	}
	items, next := cut(page, items, func(it Item) Position { return Position{it.CreatedAt, it.ID} })
	if err := s.withAccounts(ctx, s.db.Pool, items); err != nil {
		return nil, nil, err
	}
	return items, next, nil
}

// Item returns the subject's item with its accounts; another subject's
// item, a removed one and an unknown id are all the same ENotFound.
func (s *Service) Item(ctx context.Context, sub, id string) (Item, error) {
	if !kluis.ValidID(kluis.PrefixItem, id) {
		return Item{}, notFound()
	}
	subjectID, err := vault.LookupSubject(ctx, s.db.Pool, sub)
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

// Accounts lists one page of the subject's accounts, linked and manual,
// oldest first, and where the next page starts (nil after the last).
func (s *Service) Accounts(ctx context.Context, sub string, page Page) ([]Account, *Position, error) {
	subjectID, err := vault.LookupSubject(ctx, s.db.Pool, sub)
	if kluis.ErrorCode(err) == kluis.ENotFound {
		return []Account{}, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	accts, err := listAccounts(ctx, s.db.Pool, subjectID, page)
	if err != nil {
		return nil, nil, err
	}
	accts, next := cut(page, accts, func(a Account) Position { return Position{a.CreatedAt, a.ID} })
	return accts, next, nil
}

// Account returns the subject's account; another subject's is ENotFound.
func (s *Service) Account(ctx context.Context, sub, id string) (Account, error) {
	if !kluis.ValidID(kluis.PrefixAccount, id) {
		return Account{}, notFound()
	}
	subjectID, err := vault.LookupSubject(ctx, s.db.Pool, sub)
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
//
// While the subject's erasure runs it is kluis.ESubjectErasing: the erasure
// revokes and removes the item itself.
func (s *Service) DeleteItem(ctx context.Context, actor audit.Actor, id string) (providerRevoked bool, err error) {
	it, err := s.Item(ctx, actor.Name, id)
	if err != nil {
		return false, err
	}
	if err := vault.FenceSubject(ctx, s.db.Pool, it.SubjectID); err != nil {
		return false, err
	}
	return s.removeItem(ctx, actor, actor.Name, it, func(ctx context.Context, tx pgx.Tx, _ bool) error {
		return vault.FenceSubject(ctx, tx, it.SubjectID)
	})
}

// removeItem holds the item's token lease while it revokes at the provider
// (so no rotation changes the token meanwhile), then marks the item removed
// and destroys its credentials, with its audit entry, in one transaction.
// A consent the user withdrew at the provider (revoked) counts as revoked
// there; a token kluis lost (relink_required) cannot be revoked. guard runs
// first in that transaction (the erasure fence, or erasure's legal-hold
// check), told whether the provider revoked; its error leaves the item and
// its credentials as they were.
func (s *Service) removeItem(ctx context.Context, actor audit.Actor, externalSub string, it Item, guard func(ctx context.Context, tx pgx.Tx, providerRevoked bool) error) (bool, error) {
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
		if providerRevoked, err = s.revokeAtProvider(ctx, it.Provider, tokens); err != nil {
			release()
			return false, err
		}
	}
	err = s.inEventTx(ctx, func(tx pgx.Tx) error {
		if err := guard(ctx, tx, providerRevoked); err != nil {
			return err
		}
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
		if err := itemEvent(ctx, tx, events.ItemRemoved, it.SubjectID, it.ID, ItemRemoved); err != nil {
			return err
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
// id) that is not removed yet, and marks them removed, for erasure: access
// must be withdrawn at the bank before the subject's keys are shredded, or a
// token would outlive kluis's ability to revoke it (compliance.Revoker). It
// is idempotent (removed items are skipped). Each item's removal runs fence
// first, in its transaction, so that a legal hold placed meanwhile stops it
// (the error is returned and nothing more is revoked) and the erasure
// records the item. Items the provider did not revoke (down, or refusing)
// are listed in the answer, each with the error's code, and the others are
// still tried. An item whose token was already dead at the provider
// (relink_required, or invalid there) is removed but not counted as
// revoked by the fence, and its audit entry says so. A link session whose
// unstored token was never confirmed revoked is listed too (its id in
// item_id, reason revoke_failed).
func (s *Service) RevokeSubject(ctx context.Context, subjectID string, fence compliance.RevokeFence) (compliance.Revocation, error) {
	var rev compliance.Revocation
	items, err := listItems(ctx, s.db.Pool, subjectID, Page{})
	if err != nil {
		return rev, err
	}
	ext, err := vault.SubjectKey(ctx, s.db.Pool, subjectID)
	if err != nil && kluis.ErrorCode(err) != kluis.ENotFound {
		return rev, err
	}
	actor := audit.Actor{Kind: audit.ActorSystem, Name: "erasure"}
	for _, it := range items {
		// A hold that is already there stops the run before the provider
		// is asked; the fence checks again under the subject's lock.
		if err := compliance.RefuseIfHeld(ctx, s.db.Pool, subjectID); err != nil {
			return rev, err
		}
		_, err := s.removeItem(ctx, actor, ext, it, func(ctx context.Context, tx pgx.Tx, revoked bool) error {
			return fence(ctx, tx, it.ID, revoked)
		})
		switch code := kluis.ErrorCode(err); {
		case err == nil:
		case code == compliance.ELegalHold || errors.Is(err, context.Canceled):
			return rev, fmt.Errorf("banklink: revoke subject: %w", err)
		default:
			s.log.Warn("erasure could not revoke an item at its provider", "item_id", it.ID, "code", code, "cause", err.Error())
			rev.Unrevoked = append(rev.Unrevoked, compliance.UnrevokedItem{ItemID: it.ID, Provider: it.Provider, Reason: code})
		}
	}
	// A token kluis could not store and never saw revoked has nothing left
	// to revoke it with: it stays unrevoked, named by its link session.
	failed, err := revokeFailedSessions(ctx, s.db.Pool, subjectID)
	if err != nil {
		return rev, err
	}
	rev.Unrevoked = append(rev.Unrevoked, failed...)
	return rev, nil
}

// Live counts the subject's items not removed yet and its exchanges in
// flight (a session whose exchange lease is held: a provider token may be on
// its way, or one kluis could not store is being revoked), and the sessions
// whose unstored token was never confirmed revoked (revokeUnstored), in the
// erasure's transaction, for compliance.Revoker. The fence refuses new
// claims, so what it counts can only end, or stay until the run is
// completed with exceptions.
func (s *Service) Live(ctx context.Context, tx pgx.Tx, subjectID string) (int, error) {
	var n int
	err := tx.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM items WHERE subject_id = $1 AND status <> 'removed')
		     + (SELECT count(*) FROM link_sessions WHERE subject_id = $1
		        AND ((status = 'succeeded' AND exchange_claimed_until > $2) OR revoke_failed_at IS NOT NULL))`,
		subjectID, s.now()).Scan(&n)
	if err != nil {
		return 0, dbErr("count live items", err)
	}
	return n, nil
}
