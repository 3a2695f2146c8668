package banklink

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/events"
	"github.com/kluis-dev/kluis/vault"
)

// tokenLease bounds how long one rotation or removal holds an item's token
// lease; providerCallTimeout bounds each provider call made under it, far
// inside the lease, so that a lease never expires under a call still
// running (another would then take it over and act on a token the first
// may have changed).
const (
	tokenLease          = 10 * time.Minute
	providerCallTimeout = time.Minute
)

// liveToken is one version of an item's access token that may be live at
// the provider.
type liveToken struct {
	token string
	// which names the version for logs and audit: "current", "pending",
	// "legacy_pending".
	which string
}

// liveTokens opens every version of the item's access token that may be
// live at the provider: the current one, a pending successor (a rotation
// under way or cut short) and a legacy pending token. versions is what
// stood behind the ref when they were read; a caller that acts on the
// provider with them checks, in its transaction, that it still stands.
func (s *Service) liveTokens(ctx context.Context, it Item) ([]liveToken, vault.Versions, error) {
	var out []liveToken
	if it.CredentialRef == "" {
		return nil, vault.Versions{}, nil
	}
	v, err := s.vault.CredentialVersions(ctx, s.db.Pool, it.CredentialRef, false)
	if err != nil {
		return nil, v, err
	}
	if v.Revoked {
		return nil, v, nil
	}
	tok, err := s.accessToken(ctx, it.ID, it.CredentialRef)
	if err != nil {
		return nil, v, err
	}
	out = append(out, liveToken{tok, "current"})
	if v.Pending {
		cred, err := s.vault.OpenPendingOwned(ctx, s.db.Pool, vault.ItemOwner(it.ID), it.CredentialRef)
		if err != nil {
			return nil, v, err
		}
		tok, err := tokenOf(cred)
		if err != nil {
			return nil, v, err
		}
		out = append(out, liveToken{tok, "pending"})
	}
	if it.legacyPendingRef != "" {
		tok, err := s.accessToken(ctx, it.ID, it.legacyPendingRef)
		if err != nil && kluis.ErrorCode(err) != kluis.ENotFound {
			return nil, v, err
		}
		if err == nil {
			out = append(out, liveToken{tok, "legacy_pending"})
		}
	}
	return out, v, nil
}

// tokenOf reads the access token out of an opened credential and zeroes it.
func tokenOf(cred vault.Credential) (string, error) {
	defer cred.Zero()
	var sec struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(cred.Secret, &sec); err != nil || sec.AccessToken == "" {
		return "", kluis.Wrap(kluis.EInternal, "internal error", errors.New("banklink: access token credential is malformed"))
	}
	return sec.AccessToken, nil
}

// revokeAtProvider removes the item at its provider (the one it was linked
// through: provider) with every token given. revoked is true when the
// provider accepted one of them (the item is gone there: its other tokens
// die with it). A token the provider no longer knows counts as not
// revoked, never as revoked. When the provider failed for any of them
// (unreachable, refusing), even if it accepted another, the error is
// returned and the caller changes nothing: the removal is tried again with
// every version, rather than a version that may still be live being let
// go. So it is when the item's provider is not configured.
func (s *Service) revokeAtProvider(ctx context.Context, provider string, tokens []liveToken) (bool, error) {
	p, err := s.providers.Provider(provider)
	if err != nil {
		return false, err
	}
	var failure error
	revoked := false
	for _, t := range tokens {
		callCtx, cancel := context.WithTimeout(ctx, providerCallTimeout)
		err := p.RemoveItem(callCtx, t.token)
		cancel()
		switch {
		case err == nil:
			revoked = true
		case kluis.ErrorCode(err) == CodeInvalidToken:
			// Dead already: a rotated-away version, or an item the user or
			// the provider removed.
		default:
			failure = providerErr("remove item", err)
		}
	}
	if failure != nil {
		// One version may still be live: change nothing, so that the call
		// is retried with every version.
		return false, failure
	}
	return revoked, nil
}

// sameVersions checks, in tx, that what stands behind the credential is what
// the caller acted on at the provider, and locks it until tx ends.
func (s *Service) sameVersions(ctx context.Context, tx pgx.Tx, want vault.Versions) error {
	if want.Ref == "" {
		return nil
	}
	got, err := s.vault.CredentialVersions(ctx, tx, want.Ref, true)
	if err != nil {
		return err
	}
	if got != want {
		return kluis.Errorf(kluis.EConflict, "the item's token changed while it was being revoked; try again")
	}
	return nil
}

// markRelinkRequired records that kluis no longer holds a live token for
// the item (the provider rotated it and the answer was lost, or a fresh
// token could not be stored and was revoked): relink_required, with its
// audit entry and an item.relink_required event, in one transaction. It
// does nothing when the credential moved on from version want since (a
// concurrent rotation succeeded: nothing was lost).
func (s *Service) markRelinkRequired(ctx context.Context, actor audit.Actor, it Item, want uint32, reason string) (bool, error) {
	ctx = context.WithoutCancel(ctx)
	changed := false
	err := s.inEventTx(ctx, func(tx pgx.Tx) error {
		v, err := s.vault.CredentialVersions(ctx, tx, it.CredentialRef, true)
		if err != nil {
			return err
		}
		if v.Version != want || v.Pending || v.Revoked {
			return nil
		}
		if changed, err = setItemRelinkRequired(ctx, tx, it.ID, s.now()); err != nil || !changed {
			return err
		}
		if _, err := events.Enqueue(ctx, tx, events.Event{Subject: it.SubjectID, Type: events.ItemRelinkRequired,
			Data: map[string]string{"item_id": it.ID, "status": ItemRelinkRequired}}); err != nil {
			return err
		}
		ext, err := vault.SubjectKey(ctx, tx, it.SubjectID)
		if err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, actor, "item.relink_required", it.ID, ext, map[string]any{
			"from": it.Status, "reason": reason, "credential_ref": it.CredentialRef, "version": want})
	})
	return changed, err
}

// revokeConsent acts on the user withdrawing consent to the item at the
// provider (USER_PERMISSION_REVOKED): the item and its accounts become
// revoked and their credentials tombstones (answering 410), with the audit
// entry and an item.revoked event, in tx. providerRevoked and versions come
// from revokeAtProvider, run before tx.
func (s *Service) revokeConsent(ctx context.Context, tx pgx.Tx, actor audit.Actor, it Item, versions vault.Versions, providerRevoked bool, eventID string) (bool, error) {
	if err := s.sameVersions(ctx, tx, versions); err != nil {
		return false, err
	}
	_, changed, err := setItemStatus(ctx, tx, it.ID, ItemEventConsentRevoked, s.now())
	if err != nil || !changed {
		return false, err
	}
	if _, err := tx.Exec(ctx, `UPDATE items SET rotation_claimed_until = NULL WHERE id = $1`, it.ID); err != nil {
		return false, dbErr("revoke item", err)
	}
	if it.CredentialRef != "" {
		if err := s.vault.Revoke(ctx, tx, it.CredentialRef); err != nil {
			return false, err
		}
	}
	if it.legacyPendingRef != "" {
		if err := s.vault.Destroy(ctx, tx, it.legacyPendingRef); err != nil && kluis.ErrorCode(err) != kluis.ENotFound {
			return false, err
		}
		if _, err := adoptLegacyPending(ctx, tx, it.ID, it.legacyPendingRef, s.now()); err != nil {
			return false, err
		}
	}
	accts, err := s.revokeAccountNumbers(ctx, tx, it.ID, "")
	if err != nil {
		return false, err
	}
	if _, err := events.Enqueue(ctx, tx, events.Event{Subject: it.SubjectID, Type: events.ItemRevoked,
		Data: map[string]string{"item_id": it.ID, "status": ItemRevoked, "scope": "item"}}); err != nil {
		return false, err
	}
	ext, err := vault.SubjectKey(ctx, tx, it.SubjectID)
	if err != nil {
		return false, err
	}
	return true, s.appendAudit(ctx, tx, actor, "item.revoked", it.ID, ext, map[string]any{
		"from": it.Status, "to": ItemRevoked, "event_id": eventID, "provider_revoked": providerRevoked,
		"accounts_revoked": len(accts), "credential_ref": it.CredentialRef})
}

// revokeAccountNumbers marks the item's accounts (or the one the provider
// names) revoked and tombstones their numbers.
func (s *Service) revokeAccountNumbers(ctx context.Context, tx pgx.Tx, itemID, providerAccountID string) ([]Account, error) {
	accts, err := revokeAccounts(ctx, tx, itemID, providerAccountID, s.now())
	if err != nil {
		return nil, err
	}
	for _, a := range accts {
		if a.AccountNumberRef == "" {
			continue
		}
		if err := s.vault.Revoke(ctx, tx, a.AccountNumberRef); err != nil {
			return nil, err
		}
	}
	return accts, nil
}

// revokeAccountConsent acts on the user withdrawing consent to one account
// (USER_ACCOUNT_REVOKED): the account becomes revoked, no longer verified,
// and its number a tombstone (410), with the audit entry and an
// item.revoked event of scope account. The item and its token stay: the
// user still consents to its other accounts.
func (s *Service) revokeAccountConsent(ctx context.Context, tx pgx.Tx, actor audit.Actor, it Item, ev WebhookEvent) (bool, error) {
	if ev.ProviderAccountID == "" {
		return false, nil
	}
	accts, err := s.revokeAccountNumbers(ctx, tx, it.ID, ev.ProviderAccountID)
	if err != nil || len(accts) == 0 {
		return false, err
	}
	ext, err := vault.SubjectKey(ctx, tx, it.SubjectID)
	if err != nil {
		return false, err
	}
	for _, a := range accts {
		if _, err := events.Enqueue(ctx, tx, events.Event{Subject: it.SubjectID, Type: events.ItemRevoked, Data: map[string]string{
			"item_id": it.ID, "account_id": a.ID, "status": AccountRevoked, "scope": "account"}}); err != nil {
			return false, err
		}
		if err := s.appendAudit(ctx, tx, actor, "account.revoked", a.ID, ext, map[string]any{
			"item_id": it.ID, "event_id": ev.ID, "account_number_revoked": a.AccountNumberRef != ""}); err != nil {
			return false, err
		}
	}
	return true, nil
}
