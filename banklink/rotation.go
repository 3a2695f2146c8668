package banklink

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/events"
	"github.com/kluis-dev/kluis/vault"
)

// DefaultRotationBatch bounds the items one rotation run handles.
const DefaultRotationBatch = 500

// RotationResult counts what a rotation run did.
type RotationResult struct {
	Rotated int
	// Finished counts rotations a cut-short earlier run left pending.
	Finished int
	// RelinkRequired counts items whose token kluis found it had lost.
	RelinkRequired int
	Failed         int
}

// rotationActor is the audit actor of the rotation job.
var rotationActor = audit.Actor{Kind: audit.ActorSystem, Name: "bank-token-rotation"}

// RotateAccessTokens rotates at the provider every live item's access token
// older than maxAge (up to batch items; maxAge <= 0: none, scheduled
// rotation is off), and in any case finishes rotations an earlier run left
// cut short. For each item it takes the item's token lease (one rotation
// per item at a time, however many instances run), has the provider rotate
// (the old token dies at once), seals the successor as the pending version
// of the same credential ref and commits it, and only then, in a second
// transaction, makes it current (the old version is let go there) with the
// audit entry and an item.token_rotated event. The ref services hold keeps
// working across the rotation.
//
// Failures: a successor that cannot be stored is revoked at the provider
// (kluis never keeps a live token it does not hold) and the item becomes
// relink_required; a provider that says the old token is dead, or an answer
// that never arrived after which the old token is dead, also leaves the item
// relink_required with an item.relink_required event, never active with a
// dead token. A provider that refused, or cannot say, is retried by the next
// run. Failures are counted and logged without secrets; ctx ending stops the
// run between items.
func (s *Service) RotateAccessTokens(ctx context.Context, maxAge time.Duration, batch int) (RotationResult, error) {
	if batch <= 0 {
		batch = DefaultRotationBatch
	}
	var res RotationResult
	now := s.now()
	var cutoff time.Time
	if maxAge > 0 {
		cutoff = now.Add(-maxAge)
	}
	due, err := itemsDueForRotation(ctx, s.db.Pool, now, cutoff, batch)
	if err != nil {
		return res, err
	}
	for _, row := range due {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		outcome, err := s.rotateItem(ctx, row.ID, cutoff)
		if err != nil {
			res.Failed++
			s.log.Warn("access token rotation failed; the next run retries", "item_id", row.ID,
				"code", kluis.ErrorCode(err), "cause", err.Error())
			continue
		}
		switch outcome {
		case rotated:
			res.Rotated++
		case finished:
			res.Finished++
		case relink:
			res.RelinkRequired++
		}
	}
	return res, nil
}

// What rotateItem did.
type rotationOutcome int

const (
	skipped  rotationOutcome = iota // another run has it, or it no longer needs rotating
	rotated                         // a new token is current
	finished                        // a cut-short rotation's pending token is current
	relink                          // kluis lost the token: relink_required
	checked                         // a cut-short rotation left the token as it was
)

// rotateItem rotates one item under its token lease. Whatever happens, the
// lease does not outlive the call: a rotation that ends with its outcome
// unknown (a pending version not yet current, a provider that did not say
// whether it rotated) leaves the lease expired rather than released, so
// that the next run, or a removal, picks the item up at once and finds out.
func (s *Service) rotateItem(ctx context.Context, id string, cutoff time.Time) (rotationOutcome, error) {
	until := s.now().Add(tokenLease)
	resumed, ok, err := claimToken(ctx, s.db.Pool, id, s.now(), until, &cutoff)
	if err != nil || !ok {
		return skipped, err
	}
	defer s.expireLease(ctx, id, until)
	return s.rotateClaimed(ctx, id, until, resumed)
}

// rotateClaimed is rotateItem's work under the lease until.
func (s *Service) rotateClaimed(ctx context.Context, id string, until time.Time, resumed bool) (rotationOutcome, error) {
	it, err := anyItem(ctx, s.db.Pool, id)
	if err != nil {
		return skipped, err
	}
	if it.legacyPendingRef != "" {
		if err := s.adoptLegacy(ctx, it); err != nil {
			return skipped, err
		}
	}
	v, err := s.vault.CredentialVersions(ctx, s.db.Pool, it.CredentialRef, false)
	if err != nil {
		return skipped, err
	}
	if v.Pending {
		return finished, s.switchToken(ctx, it)
	}
	token, err := s.accessToken(ctx, it.ID, it.CredentialRef)
	if err != nil {
		return skipped, err
	}
	// A provider whose tokens expire (Stitch) cannot be asked whether a
	// refresh token is still good without spending it: spending it is the
	// probe (a spent one is CodeInvalidToken: lost).
	refreshes := s.expiring(it.Provider)
	if resumed && !refreshes {
		// A run was cut short between its claim and its store: the
		// provider may have rotated. Ask it whether the token still works.
		return s.probe(ctx, it, v.Version, token, until)
	}
	// No new token for a subject being erased: its seal would be refused
	// (storePending fences again, for an erasure approved meanwhile, and
	// the failed store revokes the fresh token) after the provider had
	// already killed the old one.
	if err := vault.FenceSubject(ctx, s.db.Pool, it.SubjectID); err != nil {
		s.releaseLease(ctx, it.ID, until)
		return skipped, err
	}
	p, err := s.providers.Provider(it.Provider)
	if err != nil {
		s.releaseLease(ctx, it.ID, until)
		return skipped, err
	}
	fresh, err := s.rotateAt(ctx, p, token, until)
	if refreshes && kluis.ErrorCode(err) == kluis.EUnavailable {
		// The answer may have been lost after the provider spent the
		// refresh token: spend it again, which either works (the first
		// request never arrived) or says it is spent (lost).
		fresh, err = s.rotateAt(ctx, p, token, until)
	}
	switch code := kluis.ErrorCode(err); {
	case err == nil:
	case code == CodeInvalidToken:
		return s.lost(ctx, it, v.Version, "the provider no longer knows the token")
	case refreshes && code == kluis.EUnavailable:
		// Still no answer: the lease is left to expire, and the next
		// refresh spends the token again.
		return skipped, providerErr("refresh access token", err)
	case code == kluis.EUnavailable || code == kluis.EInternal:
		// The request may have reached the provider and its answer been
		// lost: the old token may be dead already.
		if out, perr := s.probe(ctx, it, v.Version, token, until); perr != nil || out == relink {
			return out, perr
		}
		return skipped, providerErr("rotate access token", err)
	default:
		s.releaseLease(ctx, it.ID, until)
		return skipped, providerErr("rotate access token", err)
	}
	// From here the old token is dead at the provider: store the new one
	// even if the caller has gone away.
	ctx = context.WithoutCancel(ctx)
	if err := s.storePending(ctx, it, v.Version, fresh); err != nil {
		return s.storeFailed(ctx, it, v.Version, fresh, err)
	}
	return rotated, s.switchToken(ctx, it)
}

// rotateAt asks p to rotate token, bounded well inside the lease that ends
// at until, so that the lease never expires under a call still running.
func (s *Service) rotateAt(ctx context.Context, p Provider, token string, until time.Time) (string, error) {
	callCtx, cancel := context.WithTimeout(ctx, callTimeout(until.Sub(s.now())))
	defer cancel()
	return p.RotateAccessToken(callCtx, token)
}

// callTimeout bounds one provider call under a lease with left to run: at
// most providerCallTimeout, and a third of what is left.
func callTimeout(left time.Duration) time.Duration {
	return max(min(providerCallTimeout, left/3), time.Second)
}

// storePending seals the fresh token as the pending version of the item's
// credential, while the item is live and its credential still at version.
func (s *Service) storePending(ctx context.Context, it Item, version uint32, fresh string) error {
	secret, err := accessTokenSecret(it.Provider, fresh)
	if err != nil {
		return err
	}
	defer clear(secret)
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		// SealPending updates a row, which the database's fence (on
		// insert) does not see: fence the subject here.
		if err := vault.FenceSubject(ctx, tx, it.SubjectID); err != nil {
			return err
		}
		locked, err := anyItem(ctx, tx, it.ID)
		if err != nil {
			return err
		}
		if locked.Status != ItemActive && locked.Status != ItemLoginRequired {
			return kluis.Errorf(kluis.EConflict, "the item changed during rotation")
		}
		return s.vault.SealPending(ctx, tx, it.CredentialRef, version, secret)
	})
}

// storeFailed handles a fresh token kluis could not store: it is revoked at
// the provider (a live token kluis does not hold must not exist), which ends
// the item there, so the item becomes relink_required. A revocation the
// provider refused is logged and audited as such.
func (s *Service) storeFailed(ctx context.Context, it Item, version uint32, fresh string, cause error) (rotationOutcome, error) {
	rerr := s.removeFresh(ctx, it.Provider, fresh)
	reason := "the fresh token could not be stored and was revoked at the provider"
	if rerr != nil {
		reason = "the fresh token could not be stored, and the provider did not revoke it"
		s.log.Error("a rotated access token could not be stored or revoked: the item is live at the provider with a token kluis does not hold",
			"item_id", it.ID, "code", kluis.ErrorCode(rerr), "cause", rerr.Error())
	}
	if _, err := s.markRelinkRequired(ctx, rotationActor, it, version, reason); err != nil {
		s.log.Error("mark item relink_required", "item_id", it.ID, "cause", err.Error())
	}
	return skipped, fmt.Errorf("banklink: store rotated token: %w", cause)
}

// probe asks the provider whether the item's current token still works,
// after a rotation whose outcome is unknown. Dead: kluis lost the token
// (relink_required). Working (or refused for another reason, which a dead
// token would not get): nothing was rotated, and the lease is released.
// No answer: the lease stays, to expire, and the next run asks again.
func (s *Service) probe(ctx context.Context, it Item, version uint32, token string, until time.Time) (rotationOutcome, error) {
	p, err := s.providers.Provider(it.Provider)
	if err != nil {
		return skipped, err
	}
	callCtx, cancel := context.WithTimeout(ctx, providerCallTimeout)
	_, err = p.GetAccounts(callCtx, token)
	cancel()
	switch code := kluis.ErrorCode(err); {
	case code == CodeInvalidToken:
		return s.lost(ctx, it, version, "the provider rotated the token and its answer was lost")
	case code == kluis.EUnavailable || code == kluis.EInternal:
		return skipped, providerErr("check access token", err)
	}
	s.releaseLease(ctx, it.ID, until)
	return checked, nil
}

// lost marks the item relink_required: kluis holds no live token for it.
func (s *Service) lost(ctx context.Context, it Item, version uint32, reason string) (rotationOutcome, error) {
	changed, err := s.markRelinkRequired(ctx, rotationActor, it, version, reason)
	if err != nil || !changed {
		return skipped, err
	}
	s.log.Warn("an item's access token is lost; the user must link it again", "item_id", it.ID, "reason", reason)
	return relink, nil
}

// expireLease marks the lease of until expired, if it is still held: the
// item is left for the next run to resume.
func (s *Service) expireLease(ctx context.Context, id string, until time.Time) {
	if err := expireToken(context.WithoutCancel(ctx), s.db.Pool, id, until, s.now()); err != nil {
		s.log.Error("expire item token lease", "item_id", id, "cause", err.Error())
	}
}

func (s *Service) releaseLease(ctx context.Context, id string, until time.Time) {
	if err := releaseToken(context.WithoutCancel(ctx), s.db.Pool, id, until); err != nil {
		s.log.Error("release item token lease", "item_id", id, "cause", err.Error())
	}
}

// switchToken makes the item's pending version current (the old token is
// let go here, after its successor was committed) and ends the lease, in one
// transaction with the audit entry and an item.token_rotated event.
func (s *Service) switchToken(ctx context.Context, it Item) error {
	return s.inEventTx(ctx, func(tx pgx.Tx) error {
		version, err := s.vault.PromotePending(ctx, tx, it.CredentialRef)
		if err != nil {
			return err
		}
		ok, err := markRotated(ctx, tx, it.ID, s.now())
		if err != nil {
			return err
		}
		if !ok {
			return kluis.Errorf(kluis.EConflict, "the item changed during rotation")
		}
		refresh := s.expiring(it.Provider)
		if !refresh {
			// A token that expires is renewed every few minutes: not news
			// for the app.
			if _, err := events.Enqueue(ctx, tx, events.Event{Subject: it.SubjectID, Type: events.ItemTokenRotated,
				Data: map[string]string{"item_id": it.ID, "status": it.Status}}); err != nil {
				return err
			}
		}
		ext, err := vault.SubjectKey(ctx, tx, it.SubjectID)
		if err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, rotationActor, "item.access_token_rotated", it.ID, ext, map[string]any{
			"credential_ref": it.CredentialRef, "version": version, "refresh": refresh})
	})
}

// adoptLegacy moves a rotated token that a kluis from before stable refs
// sealed under a ref of its own into the item's credential, as its pending
// version, so that the switch keeps the item's ref.
func (s *Service) adoptLegacy(ctx context.Context, it Item) error {
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		v, err := s.vault.CredentialVersions(ctx, tx, it.CredentialRef, true)
		if err != nil {
			return err
		}
		cred, err := s.vault.OpenOwnedIn(ctx, tx, vault.ItemOwner(it.ID), it.legacyPendingRef)
		if err != nil {
			return err
		}
		defer cred.Zero()
		if err := s.vault.SealPending(ctx, tx, it.CredentialRef, v.Version, cred.Secret); err != nil {
			return err
		}
		ok, err := adoptLegacyPending(ctx, tx, it.ID, it.legacyPendingRef, s.now())
		if err != nil {
			return err
		}
		if !ok {
			return kluis.Errorf(kluis.EConflict, "the item changed during rotation")
		}
		return s.vault.Destroy(ctx, tx, it.legacyPendingRef)
	})
}

// ExpireLinkSessions marks open link sessions past their deadline expired
// (reads already treat them so) and returns how many it marked.
func (s *Service) ExpireLinkSessions(ctx context.Context, batch int) (int, error) {
	if batch <= 0 {
		batch = DefaultRotationBatch
	}
	return expireSessions(ctx, s.db.Pool, s.now(), batch)
}

// removeFresh revokes at the item's provider a rotated token kluis could
// not store.
func (s *Service) removeFresh(ctx context.Context, provider, fresh string) error {
	p, err := s.providers.Provider(provider)
	if err != nil {
		return err
	}
	callCtx, cancel := context.WithTimeout(ctx, providerCallTimeout)
	defer cancel()
	return p.RemoveItem(callCtx, fresh)
}
