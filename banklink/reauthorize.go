package banklink

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/events"
	"github.com/kluis-dev/kluis/vault"
)

// Update mode at an OAuth provider (Stitch) is a new authorization: the
// user goes through the provider's authorize page again (the session's
// link token is its authorize URL, as for a new item), and the code it
// sends back is redeemed for a new token pair. That pair replaces the
// item's token under the same credential_ref (a new version), which also
// repairs an item kluis lost the token of (relink_required): unlike
// Plaid's update mode, nothing of the old token is needed.

// reauthWait bounds how long the exchange waits for another instance's
// refresh of the item's old token to end before it takes the lease: a
// refresh's call to the provider is bounded well below it, and it stays
// inside the session's exchange lease (exchangeLease), so no second
// exchange of the session starts meanwhile.
const reauthWait = 20 * time.Second

// updatable says whether an item in status may enter update mode at a
// provider that does (reauth) or does not re-authorize through OAuth.
func updatable(status string, reauth bool) bool {
	return status == ItemActive || status == ItemLoginRequired || (reauth && status == ItemRelinkRequired)
}

// exchangeReauthorized finishes update mode at an OAuth provider: it
// redeems the public token for a new token pair, checks the provider
// authorized the item's own user (the id token's subject, which OpenID
// Connect keeps stable for a user, is the item's provider_item_id), takes
// the item's token lease (so that no refresh of the old pair runs across
// it), and in one transaction seals the pair as the credential's next
// version, makes the item active (item.repaired from login_required or
// relink_required), adds accounts the item does not have yet and closes
// the session. The old refresh token is not revoked: at Stitch revoking
// it would end the user's grant, the new pair's too.
func (s *Service) exchangeReauthorized(ctx context.Context, actor audit.Actor, row sessionRow, hash []byte, publicToken string, it Item, p Provider) (Item, error) {
	ex, err := s.exchangeToken(ctx, p, publicToken)
	if err != nil {
		return Item{}, providerErr("exchange public token", err)
	}
	// From here the provider holds a live grant: the rest runs to its end.
	ctx = context.WithoutCancel(ctx)
	if ex.ProviderItemID == "" || ex.ProviderItemID != it.ProviderItemID {
		// Someone else's bank login: kluis keeps none of it.
		s.removeQuietly(p, ex.AccessToken)
		return Item{}, kluis.Errorf(kluis.EConflict, "the bank login authorized is not the item's; link it as a new item")
	}
	accts, numbers, rerr := s.fetchAccounts(ctx, p, ex.AccessToken)
	if rerr != nil {
		s.log.Warn("accounts could not be read after re-authorization; none are added", "item_id", it.ID,
			"code", kluis.ErrorCode(rerr))
	}
	until, err := s.leaseForReauth(ctx, it.ID)
	if err != nil {
		return Item{}, s.reauthStoreFailed(ctx, actor, it, p, ex.AccessToken, err)
	}
	var from string
	err = s.inEventTx(ctx, func(tx pgx.Tx) error {
		var err error
		from, err = s.replaceToken(ctx, tx, actor, row, hash, it, ex.AccessToken, accts.Accounts, numbers)
		return err
	})
	if err != nil {
		s.expireLease(ctx, it.ID, until)
		return Item{}, s.reauthStoreFailed(ctx, actor, it, p, ex.AccessToken, err)
	}
	s.log.Info("item re-authorized", "item_id", it.ID, "from", from)
	return s.Item(ctx, actor.Name, it.ID)
}

// leaseForReauth takes the item's token lease, waiting (up to reauthWait)
// for a refresh another instance holds it for to end.
func (s *Service) leaseForReauth(ctx context.Context, id string) (time.Time, error) {
	deadline := time.Now().Add(reauthWait)
	for {
		until := s.now().Add(refreshLease)
		if _, ok, err := claimToken(ctx, s.db.Pool, id, s.now(), until, nil); err != nil || ok {
			return until, err
		}
		if time.Now().After(deadline) {
			return time.Time{}, kluis.Unavailable("item token lease", errors.New("banklink: the item's token stayed leased"))
		}
		time.Sleep(refreshPoll)
	}
}

// replaceToken is exchangeReauthorized's transaction: the new token as the
// credential's next version, the item active, new accounts, the session
// exchanged, with their audit entries and events. It returns the status
// the item came from.
func (s *Service) replaceToken(ctx context.Context, tx pgx.Tx, actor audit.Actor, row sessionRow, hash []byte, it Item,
	token string, accounts []ProviderAccount, numbers map[string]AuthNumbers) (string, error) {
	if err := vault.FenceSubject(ctx, tx, row.SubjectID); err != nil {
		return "", err
	}
	locked, err := getItem(ctx, tx, it.ID, row.SubjectID, true)
	if err != nil {
		return "", err
	}
	if !updatable(locked.Status, true) {
		return "", kluis.Errorf(kluis.EConflict, "the item can no longer be updated")
	}
	version, err := s.sealSuccessor(ctx, tx, locked, token)
	if err != nil {
		return "", err
	}
	now := s.now()
	_, repaired, err := setItemStatus(ctx, tx, locked.ID, ItemEventReauthorized, now)
	if err != nil {
		return "", err
	}
	if ok, err := markRotated(ctx, tx, locked.ID, now); err != nil || !ok {
		return "", errors.Join(err, kluis.Errorf(kluis.EConflict, "the item changed during re-authorization"))
	}
	added, err := s.addAccounts(ctx, tx, locked, accounts, numbers, now)
	if err != nil {
		return "", err
	}
	if ok, err := markExchanged(ctx, tx, row.ID, hash, locked.ID, now); err != nil || !ok {
		return "", errors.Join(err, sessionClosed("no longer open"))
	}
	if err := s.appendAudit(ctx, tx, actor, "link_session.exchanged", row.ID, actor.Name,
		map[string]any{"item_id": locked.ID, "mode": ModeUpdate}); err != nil {
		return "", err
	}
	if err := s.appendAudit(ctx, tx, actor, "item.reauthorized", locked.ID, actor.Name, map[string]any{
		"from": locked.Status, "credential_ref": locked.CredentialRef, "version": version}); err != nil {
		return "", err
	}
	if repaired {
		if err := s.appendAudit(ctx, tx, actor, "item.login_repaired", locked.ID, actor.Name,
			map[string]any{"from": locked.Status, "to": ItemActive}); err != nil {
			return "", err
		}
		if err := itemEvent(ctx, tx, events.ItemRepaired, locked.SubjectID, locked.ID, ItemActive); err != nil {
			return "", err
		}
	}
	if added > 0 {
		if err := itemEvent(ctx, tx, events.ItemAccountsAdded, locked.SubjectID, locked.ID, ItemActive); err != nil {
			return "", err
		}
		if err := s.appendAudit(ctx, tx, actor, "item.accounts_added", locked.ID, actor.Name, map[string]any{"accounts": added}); err != nil {
			return "", err
		}
	}
	return locked.Status, nil
}

// sealSuccessor makes token the current version of the item's credential
// (same ref) in tx and returns that version. A pending version a cut-short
// renewal left is promoted first and superseded at once: the grant just
// made is newer than any it holds.
func (s *Service) sealSuccessor(ctx context.Context, tx pgx.Tx, it Item, token string) (uint32, error) {
	v, err := s.vault.CredentialVersions(ctx, tx, it.CredentialRef, true)
	if err != nil {
		return 0, err
	}
	if v.Pending {
		if v.Version, err = s.vault.PromotePending(ctx, tx, it.CredentialRef); err != nil {
			return 0, err
		}
	}
	secret, err := accessTokenSecret(it.Provider, token)
	if err != nil {
		return 0, err
	}
	defer clear(secret)
	if err := s.vault.SealPending(ctx, tx, it.CredentialRef, v.Version, secret); err != nil {
		return 0, err
	}
	return s.vault.PromotePending(ctx, tx, it.CredentialRef)
}

// reauthStoreFailed handles a new grant kluis could not store: it is
// revoked at the provider (a live token kluis does not hold must not
// exist), which at Stitch ends the user's grant and with it the item's old
// token, so a live item becomes relink_required. The store's error is
// returned.
func (s *Service) reauthStoreFailed(ctx context.Context, actor audit.Actor, it Item, p Provider, token string, cause error) error {
	s.removeQuietly(p, token)
	cur, err := anyItem(ctx, s.db.Pool, it.ID)
	if err == nil && (cur.Status == ItemActive || cur.Status == ItemLoginRequired) {
		if v, verr := s.vault.CredentialVersions(ctx, s.db.Pool, cur.CredentialRef, false); verr == nil {
			if _, merr := s.markRelinkRequired(ctx, actor, cur, v.Version, "the re-authorized token could not be stored and was revoked"); merr != nil {
				s.log.Error("mark item relink_required", "item_id", it.ID, "cause", merr.Error())
			}
		}
	}
	return cause
}
