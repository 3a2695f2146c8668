package vault

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/postgres"
)

// SubjectCredential describes one of a subject's credentials without opening
// it; Revoked says only its tombstone is left (the secret was destroyed).
// Withheld is its kind's Kind.Withheld: why an export lists it unopened.
type SubjectCredential struct {
	CredentialInfo
	Revoked  bool
	Withheld string
}

// SubjectCredentials lists every credential of the subject (internal id),
// tombstones included, oldest first, without opening any: what a complete
// subject export opens one by one (OpenIn), in the caller's transaction so
// that the list and the records agree.
func (s *Store) SubjectCredentials(ctx context.Context, q postgres.Querier, subjectID string) ([]SubjectCredential, error) {
	rows, err := q.Query(ctx, `
		SELECT ref, kind, subject_id, key_version, COALESCE(owner_type, ''), COALESCE(owner_id, ''), created_at,
			revoked_at IS NOT NULL
		FROM credentials WHERE subject_id = $1 ORDER BY created_at, ref`, subjectID)
	if err != nil {
		return nil, fmt.Errorf("vault: list subject credentials: %w", postgres.Translate(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SubjectCredential, error) {
		var c SubjectCredential
		err := r.Scan(&c.Ref, &c.Kind, &c.SubjectID, &c.KeyVersion, &c.Owner.Type, &c.Owner.ID, &c.CreatedAt, &c.Revoked)
		if k, ok := s.kinds.Lookup(c.Kind); ok {
			c.Withheld = k.Withheld
		}
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("vault: list subject credentials: %w", postgres.Translate(err))
	}
	return out, nil
}
