package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/audit/audittest"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/localkek"
)

// headKey loads (making it on first use) the audit-head key of db's kluis,
// wrapped under a fresh local root key.
func headKey(t *testing.T, db *postgres.DB) *vault.SystemKeys {
	t.Helper()
	file := filepath.Join(t.TempDir(), "kek.b64")
	if err := localkek.Generate(file); err != nil {
		t.Fatal(err)
	}
	provider, err := localkek.New(file)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := vault.LoadSystemKeys(context.Background(), db, provider, vault.SystemKeyAuditHead)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(keys.Close)
	return keys
}

func sealed(t *testing.T, a *audit.Auditor, db *postgres.DB, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		record(t, a, i)
	}
	if _, err := audit.NewSealer(db, 0).SealPending(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func verifyAgainst(t *testing.T, db *postgres.DB, key audit.HeadKey, h audit.Head) audit.VerifyResult {
	t.Helper()
	res, err := audit.VerifyWith(context.Background(), db, audit.VerifyOptions{Head: &h, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// wipe empties every audit table as the owner can: triggers off, TRUNCATE.
func wipe(t *testing.T, owner *postgres.DB) {
	t.Helper()
	ctx := context.Background()
	err := owner.InTx(ctx, func(tx pgx.Tx) error {
		for _, stmt := range []string{
			`ALTER TABLE audit_entries DISABLE TRIGGER USER`,
			`ALTER TABLE audit_chain DISABLE TRIGGER USER`,
			`ALTER TABLE audit_checkpoints DISABLE TRIGGER USER`,
			`TRUNCATE audit_chain, audit_pending, audit_checkpoints, audit_entries RESTART IDENTITY`,
			`ALTER TABLE audit_entries ENABLE TRIGGER USER`,
			`ALTER TABLE audit_chain ENABLE TRIGGER USER`,
			`ALTER TABLE audit_checkpoints ENABLE TRIGGER USER`,
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("wipe: %v", err)
	}
}

func TestAGoodHeadPassesAndStillPassesOnceTheChainGrows(t *testing.T) {
	a, db := newAuditor(t)
	key := headKey(t, db)
	ctx := context.Background()
	sealed(t, a, db, 0, 5)
	h, err := audit.CurrentHead(ctx, db, key)
	if err != nil {
		t.Fatal(err)
	}
	if h.Pos != 5 || len(h.Hash) != 64 || !strings.HasPrefix(h.Sig, "v1:") {
		t.Fatalf("head = %+v, want position 5, a hex hash and a v1 signature", h)
	}
	if res := verifyAgainst(t, db, key, h); !res.OK || res.Head != "extended" {
		t.Fatalf("verify against the current head = %+v", res)
	}
	sealed(t, a, db, 5, 3)
	if res := verifyAgainst(t, db, key, h); !res.OK || res.Entries != 8 || res.Head != "extended" {
		t.Fatalf("verify against an older head of a grown chain = %+v", res)
	}
	// The head survives being kept as JSON, as `kluis audit head` prints it.
	raw, _ := json.Marshal(h)
	back, err := audit.ParseHead(raw)
	if err != nil || back != h {
		t.Fatalf("ParseHead(%s) = %+v, %v", raw, back, err)
	}
}

// TestTheOwnerRebuildingTheChainIsCaughtByAKeptHead: the owner wipes every
// audit table and writes a plausible new chain (real entries, sealed by
// kluis's own function); the chain verifies whole on its own, but not
// against the head kept outside.
func TestTheOwnerRebuildingTheChainIsCaughtByAKeptHead(t *testing.T) {
	a, db := newAuditor(t)
	key := headKey(t, db)
	ctx := context.Background()
	sealed(t, a, db, 0, 6)
	kept, err := audit.CurrentHead(ctx, db, key)
	if err != nil {
		t.Fatal(err)
	}
	wipe(t, ownerOf(t, db))
	sealed(t, a, db, 100, 8) // longer than the old chain, so position 6 exists again
	if res, err := audit.Verify(ctx, db); err != nil || !res.OK {
		t.Fatalf("the rebuilt chain on its own = %+v, %v; want it to look whole (which is why heads are kept)", res, err)
	}
	res := verifyAgainst(t, db, key, kept)
	if res.OK || res.Problem != audit.ProblemHead || !strings.Contains(res.Reason, "position 6 has another hash") {
		t.Fatalf("verify against the kept head = %+v, want the head's position named", res)
	}

	// Wiped and rebuilt shorter: the head's position is missing.
	wipe(t, ownerOf(t, db))
	sealed(t, a, db, 200, 2)
	res = verifyAgainst(t, db, key, kept)
	if res.OK || res.Problem != audit.ProblemHead || !strings.Contains(res.Reason, "position 6 is missing") {
		t.Fatalf("verify against the kept head of a shorter chain = %+v", res)
	}
}

// TestTheOwnerPurgingBehindAForgedCheckpointIsCaughtByAKeptHead: break 1
// done by the owner, who can backdate an entry and write the checkpoint
// that lets it delete the chain's head. A head younger than the retention
// minimum cannot lawfully have been purged.
func TestTheOwnerPurgingBehindAForgedCheckpointIsCaughtByAKeptHead(t *testing.T) {
	a, db := newAuditor(t)
	key := headKey(t, db)
	owner := ownerOf(t, db)
	ctx := context.Background()
	sealed(t, a, db, 0, 4)
	kept, err := audit.CurrentHead(ctx, db, key)
	if err != nil {
		t.Fatal(err)
	}
	err = owner.InTx(ctx, func(tx pgx.Tx) error {
		for _, stmt := range []string{
			`ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only`,
			`UPDATE audit_entries SET occurred_at = '2000-01-01T00:00:00Z'`,
			`ALTER TABLE audit_entries ENABLE TRIGGER audit_entries_append_only`,
			`INSERT INTO audit_checkpoints (pos, hash, entry_seq, occurred_at, purged)
				SELECT c.pos, c.hash, c.entry_seq, e.occurred_at, 4 FROM audit_chain c JOIN audit_entries e ON e.seq = c.entry_seq WHERE c.pos = 4`,
			`DELETE FROM audit_chain WHERE pos <= 4`,
			`DELETE FROM audit_entries`,
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the owner's purge: %v", err)
	}
	res := verifyAgainst(t, db, key, kept)
	if res.OK || res.Problem != audit.ProblemHead || !strings.Contains(res.Reason, "younger than the 365 days") {
		t.Fatalf("verify against the kept head = %+v, want it refused as purged too young", res)
	}
}

func TestAForgedHeadSignatureFails(t *testing.T) {
	a, db := newAuditor(t)
	key := headKey(t, db)
	ctx := context.Background()
	sealed(t, a, db, 0, 3)
	good, err := audit.CurrentHead(ctx, db, key)
	if err != nil {
		t.Fatal(err)
	}
	// Another kluis's key (another root key, another database).
	_, other := newAuditor(t)
	foreign, err := audit.CurrentHead(ctx, other, headKey(t, other))
	if err != nil {
		t.Fatal(err)
	}
	moved := good
	moved.Pos = 2 // a real signature over another position
	cases := map[string]audit.Head{
		"a signature of garbage":       {Pos: good.Pos, Hash: good.Hash, At: good.At, Sig: "v1:AAAA"},
		"another kluis's signature":    {Pos: good.Pos, Hash: good.Hash, At: good.At, Sig: foreign.Sig},
		"a signature of another head":  moved,
		"another version of the key":   {Pos: good.Pos, Hash: good.Hash, At: good.At, Sig: "v2" + strings.TrimPrefix(good.Sig, "v1")},
		"the time moved by a microsec": {Pos: good.Pos, Hash: good.Hash, At: good.At.Add(time.Microsecond), Sig: good.Sig},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			res := verifyAgainst(t, db, key, h)
			if res.OK || res.Problem != audit.ProblemHeadSignature {
				t.Fatalf("verify = %+v, want the signature refused", res)
			}
		})
	}
}

// TestAnEntryLeftUnsealedTooLongFailsVerify: an entry older than ten seal
// intervals still waiting when the check begins (a sealer that stopped), and
// an entry neither sealed nor queued (its queue row deleted by the owner),
// each fail the check.
func TestAnEntryLeftUnsealedTooLongFailsVerify(t *testing.T) {
	a, db := newAuditor(t)
	owner := ownerOf(t, db)
	ctx := context.Background()
	record(t, a, 1)
	res, err := audit.VerifyWith(ctx, db, audit.VerifyOptions{SealInterval: time.Hour})
	if err != nil || !res.OK || res.Unsealed != 1 {
		t.Fatalf("a fresh unsealed entry = %+v, %v; want ok", res, err)
	}
	audittest.Backdate(t, owner, 1, time.Now().Add(-11*time.Hour))
	res, err = audit.VerifyWith(ctx, db, audit.VerifyOptions{SealInterval: time.Hour})
	if err != nil || res.OK || res.Problem != audit.ProblemOverdue || res.FirstBadSeq == nil || *res.FirstBadSeq != 1 {
		t.Fatalf("an entry unsealed for 11 intervals = %+v, %v; want it named", res, err)
	}

	record(t, a, 2)
	if _, err := owner.Pool.Exec(ctx, `DELETE FROM audit_pending WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.NewSealer(db, 0).SealPending(ctx); err != nil {
		t.Fatal(err)
	}
	res, err = audit.Verify(ctx, db)
	if err != nil || res.OK || res.Problem != audit.ProblemOrphan || *res.FirstBadSeq != 2 {
		t.Fatalf("an entry taken out of the queue = %+v, %v; want it named", res, err)
	}
}

// TestPublishingAHeadRefusesAChainThatNoLongerExtendsTheLastOne: the head
// job checks the newest published head before it signs a new one, so a
// rewritten chain never gets a signed head.
func TestPublishingAHeadRefusesAChainThatNoLongerExtendsTheLastOne(t *testing.T) {
	a, db := newAuditor(t)
	key := headKey(t, db)
	ctx := context.Background()
	sealed(t, a, db, 0, 3)
	first, err := audit.PublishHead(ctx, db, key)
	if err != nil {
		t.Fatal(err)
	}
	var data []byte
	if err := db.Pool.QueryRow(ctx, `SELECT payload FROM outbox WHERE type = 'audit.head'`).Scan(&data); err != nil {
		t.Fatal(err)
	}
	fromEvent, err := audit.ParseHead(data)
	if err != nil || fromEvent != first {
		t.Fatalf("the audit.head event holds %+v (%v), want %+v", fromEvent, err, first)
	}
	sealed(t, a, db, 3, 2)
	if _, err := audit.PublishHead(ctx, db, key); err != nil {
		t.Fatalf("publishing after the chain grew: %v", err)
	}
	wipe(t, ownerOf(t, db))
	sealed(t, a, db, 100, 9)
	if _, err := audit.PublishHead(ctx, db, key); !errors.Is(err, audit.ErrHeadNotExtended) {
		t.Fatalf("publishing over a rebuilt chain = %v, want ErrHeadNotExtended", err)
	}
}

// TestTheDatabaseAndGoHashEntriesAlike: links are hashed in SQL by
// audit_seal and checked in Go by Verify; odd fields must agree too.
func TestTheDatabaseAndGoHashEntriesAlike(t *testing.T) {
	a, db := newAuditor(t)
	ctx := context.Background()
	for _, e := range []audit.Entry{
		{ActorKind: audit.ActorUser, Actor: "zoë", Action: "test.ünïcode", Target: "itm_☃", Outcome: audit.OutcomeSuccess,
			Subject: "sübject", RequestID: "req-1", Details: map[string]any{"b": "ł", "a": []int{1, 2}, "nested": map[string]any{"z": nil}}},
		{ActorKind: audit.ActorAnonymous, Action: "test.empty", Outcome: audit.OutcomeDenied},
		{ActorKind: audit.ActorService, Actor: strings.Repeat("x", 5000), Action: "test.long", Outcome: audit.OutcomeFailure,
			Details: map[string]any{"n": 1.5e300}},
	} {
		if err := a.Record(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := audit.NewSealer(db, 0).SealPending(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := audit.Verify(ctx, db); err != nil || !res.OK || res.Entries != 3 {
		t.Fatalf("verify = %+v, %v", res, err)
	}
}
