package banklink

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/compliance"
)

// DefaultTokenMaxAge is how old an access token may get before the rotation
// job rotates it.
const DefaultTokenMaxAge = 90 * 24 * time.Hour

// DefaultRotationBatch bounds the items one rotation run handles.
const DefaultRotationBatch = 500

// RotationResult counts what a rotation run did.
type RotationResult struct {
	Rotated int
	// Finished counts switches a cut-short earlier run left pending.
	Finished int
	Failed   int
}

// rotationActor is the audit actor of the rotation job.
var rotationActor = Actor{Kind: compliance.ActorSystem, Name: "bank-token-rotation"}

// RotateAccessTokens rotates at the provider every live item's access token
// older than maxAge (up to batch items). For each: the provider gives the
// successor (the old token dies at once), the successor is sealed and stored
// as the item's pending credential, and only then does a second
// transaction switch the item to it and destroy the old credential. A run
// cut short between the two finds the pending credential next time and
// finishes the switch without the provider. Failures are counted, logged
// without secrets, and retried by the next run; ctx ending stops the run.
func (s *Service) RotateAccessTokens(ctx context.Context, maxAge time.Duration, batch int) (RotationResult, error) {
	if maxAge <= 0 {
		maxAge = DefaultTokenMaxAge
	}
	if batch <= 0 {
		batch = DefaultRotationBatch
	}
	var res RotationResult
	due, err := itemsDueForRotation(ctx, s.db.Pool, s.now().Add(-maxAge), batch)
	if err != nil {
		return res, err
	}
	for _, it := range due {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		pending := it.PendingRef != ""
		if !pending {
			newRef, err := s.rotateAtProvider(ctx, it)
			if err != nil {
				res.Failed++
				s.log.Warn("access token rotation failed; the next run retries", "item_id", it.ID,
					"code", kluis.ErrorCode(err), "cause", err.Error())
				continue
			}
			it.PendingRef = newRef
		}
		if err := s.switchToken(ctx, it); err != nil {
			res.Failed++
			s.log.Warn("access token switch failed; the next run finishes it", "item_id", it.ID,
				"code", kluis.ErrorCode(err), "cause", err.Error())
			continue
		}
		if pending {
			res.Finished++
		} else {
			res.Rotated++
		}
	}
	return res, nil
}

// rotateAtProvider rotates the item's token and stores the successor as
// the pending credential, returning its ref.
func (s *Service) rotateAtProvider(ctx context.Context, it rotationRow) (string, error) {
	old, err := s.accessToken(ctx, it.ID, it.CredentialRef)
	if err != nil {
		return "", err
	}
	fresh, err := s.provider.RotateAccessToken(ctx, old)
	if err != nil {
		return "", providerErr("rotate access token", err)
	}
	// From here the old token is dead at the provider: store the new one
	// even if the caller has gone away.
	ctx = context.WithoutCancel(ctx)
	var ref string
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		if ref, err = s.sealAccessToken(ctx, tx, it.ID, it.SubjectID, fresh); err != nil {
			return err
		}
		ok, err := setPendingCredential(ctx, tx, it.ID, it.CredentialRef, ref, s.now())
		if err != nil {
			return err
		}
		if !ok {
			return kluis.Errorf(kluis.EConflict, "the item changed during rotation")
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return ref, nil
}

// switchToken points the item at its pending credential and destroys the
// old one, in one transaction with the audit entry.
func (s *Service) switchToken(ctx context.Context, it rotationRow) error {
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		ok, err := switchCredential(ctx, tx, it.ID, it.CredentialRef, it.PendingRef, s.now())
		if err != nil {
			return err
		}
		if !ok {
			return kluis.Errorf(kluis.EConflict, "the item changed during rotation")
		}
		if err := s.vault.Destroy(ctx, tx, it.CredentialRef); err != nil && kluis.ErrorCode(err) != kluis.ENotFound {
			return err
		}
		ext, err := externalSubject(ctx, tx, it.SubjectID)
		if err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, rotationActor, "item.access_token_rotated", it.ID, ext, map[string]any{
			"old_credential_ref": it.CredentialRef, "credential_ref": it.PendingRef})
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
