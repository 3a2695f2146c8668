package reveal_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/localkek"
	"github.com/kluis-dev/kluis/vault/reveal"
)

// These tests run the use case over the real store and audit writer on
// Postgres; only the owners' pointers (bank linking's tables) are a fake.

type pgWorld struct {
	db       *postgres.DB
	dbURL    string
	store    *vault.Store
	ring     *vault.KeyRing
	auditor  *audit.Auditor
	pointers *fakePointers
	seeded   []vault.Seeded
	owners   []vault.Owner
}

func newPGWorld(t *testing.T, records int) *pgWorld {
	t.Helper()
	ctx := context.Background()
	db, dbURL := pgtest.Open(t)
	path := filepath.Join(t.TempDir(), "kek.b64")
	if err := localkek.Generate(path); err != nil {
		t.Fatal(err)
	}
	keys, err := localkek.New(path)
	if err != nil {
		t.Fatal(err)
	}
	sys, err := vault.LoadSystemKeys(ctx, db, keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sys.Close)
	ring := vault.NewKeyRing(keys, vault.CacheOptions{})
	t.Cleanup(ring.Purge)
	store := vault.NewStore(db, ring, sys, testKinds)
	if err := ring.LoadKeyring(ctx, db.Aside()); err != nil {
		t.Fatal(err)
	}
	w := &pgWorld{db: db, dbURL: dbURL, store: store, ring: ring, auditor: audit.NewAuditor(db, sys, nil),
		pointers: &fakePointers{of: map[vault.Owner]string{}, to: map[string][]vault.Owner{}}}
	recs := make([]vault.SeedRecord, records)
	for i := range recs {
		o := vault.ItemOwner(kluis.NewID(kluis.PrefixItem))
		w.owners = append(w.owners, o)
		recs[i] = vault.SeedRecord{ExternalID: kluis.NewID("user_"), Kind: kindAccessToken, Owner: o, Secret: []byte(secret)}
	}
	if w.seeded, err = store.Seed(ctx, recs); err != nil {
		t.Fatal(err)
	}
	for i, s := range w.seeded {
		w.pointers.of[w.owners[i]] = s.Ref
		w.pointers.to[s.Ref] = []vault.Owner{w.owners[i]}
	}
	return w
}

func (w *pgWorld) service(log reveal.AuditLog) *reveal.Service {
	return reveal.New(reveal.Options{Records: w.store, Policy: allow, Pointers: w.pointers, Audit: log})
}

// entries counts the committed reveal entries for target with outcome.
func (w *pgWorld) entries(t *testing.T, target, outcome string) int {
	t.Helper()
	var n int
	err := w.db.Pool.QueryRow(context.Background(), `
		SELECT count(*) FROM audit_entries WHERE action = $1 AND target = $2 AND outcome = $3`,
		reveal.Action, target, outcome).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRevealOnPostgresOpensAndCommitsItsEntry(t *testing.T) {
	w := newPGWorld(t, 2)
	svc := w.service(w.auditor)
	ctx := context.Background()
	got, err := svc.Reveal(ctx, byRef(w.seeded[0].Ref))
	if err != nil || string(got.Secret) != secret || got.Owner != w.owners[0] {
		t.Fatalf("by ref: %v %q %s", err, got.Secret, got.Owner)
	}
	if n := w.entries(t, w.seeded[0].Ref, audit.OutcomeSuccess); n != 1 {
		t.Errorf("%d success entries, want 1", n)
	}
	r := byItem(w.owners[1].ID)
	if got, err = svc.Reveal(ctx, r); err != nil || got.Ref != w.seeded[1].Ref {
		t.Fatalf("by item: %v %s", err, got.Ref)
	}
	// A pointer made to point at the other owner's credential: integrity.
	w.pointers.of[w.owners[1]] = w.seeded[0].Ref
	if _, err := svc.Reveal(ctx, r); kluis.ErrorCode(err) != vault.EIntegrity {
		t.Fatalf("swapped pointer: %v", err)
	}
	if n := w.entries(t, w.seeded[0].Ref, audit.OutcomeFailure); n != 1 {
		t.Errorf("%d integrity entries, want 1", n)
	}
}

func TestRevealOnPostgresOfAnErasedSubjectIsNotFound(t *testing.T) {
	w := newPGWorld(t, 1)
	ctx := context.Background()
	err := w.db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := w.ring.DestroySubjectKeys(ctx, tx, w.seeded[0].SubjectID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.service(w.auditor).Reveal(ctx, byRef(w.seeded[0].Ref)); kluis.ErrorCode(err) != kluis.ENotFound {
		t.Fatalf("err = %v", err)
	}
	if n := w.entries(t, w.seeded[0].Ref, audit.OutcomeDenied); n != 1 {
		t.Errorf("%d denied entries, want 1", n)
	}
}

// TestRevealOnPostgresOfAMovedRecordIsIntegrity: a sealed record copied
// onto another row (by someone who can write the table) does not open
// there, and is audited as an integrity failure.
func TestRevealOnPostgresOfAMovedRecordIsIntegrity(t *testing.T) {
	w := newPGWorld(t, 2)
	ctx := context.Background()
	owner := pgtest.OpenOwner(t, w.dbURL)
	if _, err := owner.Pool.Exec(ctx, `UPDATE credentials SET envelope = (SELECT envelope FROM credentials WHERE ref = $1) WHERE ref = $2`,
		w.seeded[0].Ref, w.seeded[1].Ref); err != nil {
		t.Fatal(err)
	}
	if _, err := w.service(w.auditor).Reveal(ctx, byRef(w.seeded[1].Ref)); kluis.ErrorCode(err) != vault.EIntegrity {
		t.Fatalf("err = %v", err)
	}
	if n := w.entries(t, w.seeded[1].Ref, audit.OutcomeFailure); n != 1 {
		t.Errorf("%d failure entries, want 1", n)
	}
}
