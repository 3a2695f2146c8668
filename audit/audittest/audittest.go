// Package audittest holds what tests of the audit log and of the features
// that write to it share: a keyed pseudonymizer with a fixed key, an
// Auditor over a fresh test database, and the owner's backdating of an entry.
package audittest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// Pseudonyms is a keyed pseudonymizer with a fixed test key.
type Pseudonyms struct{}

// Pseudonym returns the HMAC-SHA256 of kind and value under the test key,
// truncated as the vault's system keys truncate theirs.
func (Pseudonyms) Pseudonym(kind, value string) string {
	m := hmac.New(sha256.New, []byte("test key"))
	m.Write([]byte(kind + "\x00" + value))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// NewAuditor returns an Auditor over a fresh test database, naming people
// through Pseudonyms, and that database.
func NewAuditor(tb testing.TB) (*audit.Auditor, *postgres.DB) {
	tb.Helper()
	db, _ := pgtest.Open(tb)
	return audit.NewAuditor(db, Pseudonyms{}, nil), db
}

// Backdate gives an unsealed entry an older time, as only the owner can
// (the database dates entries itself): for fixtures of old entries.
func Backdate(tb testing.TB, owner *postgres.DB, seq int64, at time.Time) {
	tb.Helper()
	ctx := context.Background()
	err := owner.InTx(ctx, func(tx pgx.Tx) error {
		for _, stmt := range []string{
			`ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only`,
			`UPDATE audit_entries SET occurred_at = $1 WHERE seq = $2`,
			`ALTER TABLE audit_entries ENABLE TRIGGER audit_entries_append_only`,
		} {
			args := []any{}
			if strings.HasPrefix(stmt, "UPDATE") {
				args = []any{at, seq}
			}
			if _, err := tx.Exec(ctx, stmt, args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("backdate: %v", err)
	}
}
