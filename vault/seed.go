package vault

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// SeedRecord is one credential for Seed: a new subject (by user key,
// kluis.UserKey: a bare external id is the default app's;
// distinct within and across calls), its kind, owner and secret, and, for
// an account number, the number to index.
type SeedRecord struct {
	ExternalID      string
	Kind            string
	Owner           Owner
	Secret          []byte
	BlindIndexInput string
}

// Seeded is what Seed made for one record.
type Seeded struct {
	SubjectID string
	Ref       string
}

// Seed makes, for each record, a subject, its version-1 key (made locally,
// wrapped under the active keyring epoch) and the sealed credential, exactly
// as Seal would, but in bulk: three COPYs in one transaction and no
// provider call. It is for benchmarks and load tests that need a million
// subjects quickly (the caller inserts the items or accounts that point at
// the refs); serving code seals one record at a time with Seal.
func (s *Store) Seed(ctx context.Context, recs []SeedRecord) ([]Seeded, error) {
	epoch, err := s.ring.keyring.activeEpoch(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Seeded, len(recs))
	subjects := make([][]any, len(recs))
	keys := make([][]any, len(recs))
	creds := make([][]any, len(recs))
	key := make([]byte, keySize)
	defer clear(key)
	for i, rec := range recs {
		if !rec.Owner.Valid() || s.kinds.ownerType(rec.Kind) != rec.Owner.Type || len(rec.Secret) == 0 {
			return nil, kluis.Errorf(kluis.EInvalid, "seed record %d is not a valid credential", i)
		}
		sub, ref := kluis.NewID(PrefixSubject), kluis.NewID(kluis.PrefixCredential)
		_, _ = rand.Read(key)
		var wrapped, env []byte
		err := s.ring.keyring.use(ctx, epoch, func(kk []byte) error {
			var err error
			wrapped, err = wrapSubjectKey(kk, sub, 1, epoch, key)
			return err
		})
		if err != nil {
			return nil, err
		}
		if env, err = SealEnvelope(key, Binding{SubjectID: sub, Ref: ref, Kind: rec.Kind, KeyVersion: 1, Owner: rec.Owner}, rec.Secret); err != nil {
			return nil, err
		}
		var idx []byte
		if rec.BlindIndexInput != "" && s.sys != nil {
			idx = s.kinds.blindIndex(s.sys, rec.Kind, rec.BlindIndexInput)
		}
		app, ext, err := splitUserKey(rec.ExternalID)
		if err != nil {
			return nil, err
		}
		subjects[i] = []any{sub, app, ext}
		keys[i] = []any{kluis.NewID(PrefixSubjectKey), sub, int32(1), wrapped, "", int32(epoch)}
		creds[i] = []any{ref, sub, rec.Kind, int32(1), env, idx, rec.Owner.Type, rec.Owner.ID}
		out[i] = Seeded{SubjectID: sub, Ref: ref}
	}
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		for _, c := range []struct {
			table pgx.Identifier
			cols  []string
			rows  [][]any
		}{
			{pgx.Identifier{"subjects"}, []string{"id", "app_id", "external_id"}, subjects},
			{pgx.Identifier{"keystore", "subject_keys"}, []string{"id", "subject_id", "version", "wrapped", "root_version", "keyring_epoch"}, keys},
			{pgx.Identifier{"credentials"}, []string{"ref", "subject_id", "kind", "key_version", "envelope", "blind_index", "owner_type", "owner_id"}, creds},
		} {
			if _, err := tx.CopyFrom(ctx, c.table, c.cols, pgx.CopyFromRows(c.rows)); err != nil {
				return fmt.Errorf("vault: seed %s: %w", c.table.Sanitize(), postgres.Translate(err))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
