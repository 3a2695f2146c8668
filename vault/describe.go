package vault

import (
	"context"
	"fmt"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// Described is what is known of a credential without opening it.
type Described struct {
	CredentialInfo
	// ExternalSubjectID is the subject's user key (kluis.UserKey: their app
	// and their token's sub), for the audit pseudonym; it is personal data
	// and goes nowhere else.
	ExternalSubjectID string
	// App is the app the subject belongs to (a service's policy may limit
	// the apps whose credentials it reveals).
	App string
}

// Describe returns a credential's kind and subject without opening it, so
// that a caller can be refused before kluis asks the key provider for
// anything. An unknown or malformed ref is ENotFound.
func (s *Store) Describe(ctx context.Context, ref string) (Described, error) {
	if !kluis.ValidID(kluis.PrefixCredential, ref) {
		return Described{}, kluis.Errorf(kluis.ENotFound, "not found")
	}
	d := Described{CredentialInfo: CredentialInfo{Ref: ref}}
	err := s.db.Pool.QueryRow(ctx, `
		SELECT c.kind, c.subject_id, c.key_version, COALESCE(c.owner_type, ''), COALESCE(c.owner_id, ''), c.created_at, s.app_id, s.external_id
		FROM credentials c JOIN subjects s ON s.id = c.subject_id
		WHERE c.ref = $1`, ref).Scan(&d.Kind, &d.SubjectID, &d.KeyVersion, &d.Owner.Type, &d.Owner.ID, &d.CreatedAt, &d.App, &d.ExternalSubjectID)
	if err != nil {
		return Described{}, fmt.Errorf("vault: describe credential: %w", postgres.Translate(err))
	}
	d.ExternalSubjectID = kluis.UserKey(d.App, d.ExternalSubjectID)
	return d, nil
}
