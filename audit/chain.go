package audit

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/postgres"
)

// sealerLock is the advisory-lock key that lets one sealer at a time extend
// the chain, across all instances.
const sealerLock int64 = 0x6b6c756973_01 // "kluis" 01

// DefaultSealBatch is how many entries one sealing transaction chains, and
// maxSealBatch the most audit_seal accepts.
const (
	DefaultSealBatch = 1000
	maxSealBatch     = 10000
)

// genesis is the previous hash of the first entry in the chain.
var genesis = make([]byte, sha256.Size)

// chainRow is an entry as the chain sees it: the stored fields, read back from
// Postgres so that the hash covers exactly what is stored.
type chainRow struct {
	seq        int64
	occurredAt time.Time
	actorKind  string
	actor      string
	action     string
	target     string
	outcome    string
	subject    *string
	requestID  string
	details    string // jsonb as text: Postgres normalises it, so it is stable
}

const entryColumns = `e.seq, e.occurred_at, e.actor_kind, e.actor, e.action, e.target, e.outcome, e.subject_pseudonym, e.request_id, e.details::text`

func scanRow(row pgx.Row, r *chainRow) error {
	return row.Scan(&r.seq, &r.occurredAt, &r.actorKind, &r.actor, &r.action, &r.target, &r.outcome, &r.subject, &r.requestID, &r.details)
}

// entryHash is SHA-256 over a domain tag, the previous hash, the chain
// position and every stored field, each length-prefixed so that no two
// different entries encode alike.
func entryHash(prev []byte, pos int64, r chainRow) []byte {
	h := sha256.New()
	h.Write([]byte("kluis-audit-v1\x00"))
	h.Write(prev)
	writeInt(h, pos)
	writeInt(h, r.seq)
	writeInt(h, r.occurredAt.UnixMicro())
	for _, s := range []string{r.actorKind, r.actor, r.action, r.target, r.outcome} {
		writeString(h, s)
	}
	if r.subject == nil {
		h.Write([]byte{0})
	} else {
		h.Write([]byte{1})
		writeString(h, *r.subject)
	}
	writeString(h, r.requestID)
	writeString(h, r.details)
	return h.Sum(nil)
}

func writeInt(h hash.Hash, v int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	h.Write(b[:])
}

func writeString(h hash.Hash, s string) {
	writeInt(h, int64(len(s)))
	h.Write([]byte(s))
}

// Sealer chains audit entries in batches: entries are written concurrently
// by requests (no global lock on their path) and one sealer at a time, across
// instances, appends them to the chain in the order it finds them.
type Sealer struct {
	db    *postgres.DB
	batch int
}

// NewSealer returns a sealer over db that chains up to batch entries per
// transaction (DefaultSealBatch when batch ≤ 0).
func NewSealer(db *postgres.DB, batch int) *Sealer {
	if batch <= 0 {
		batch = DefaultSealBatch
	}
	return &Sealer{db: db, batch: min(batch, maxSealBatch)}
}

// SealPending chains every entry waiting to be sealed and returns how many it
// chained. If another sealer holds the lock it returns 0 at once.
func (s *Sealer) SealPending(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := s.sealBatch(ctx)
		total += n
		if err != nil || n < s.batch {
			return total, err
		}
	}
}

// sealBatch chains one batch in the database: audit_seal (a SECURITY
// DEFINER function of 00008_audit_append_only.sql) reads the queue, computes
// each link's hash and writes the chain, so that the serving role needs no
// write on the chain or the queue. Verify recomputes every hash here, in Go.
func (s *Sealer) sealBatch(ctx context.Context) (int, error) {
	var sealed int
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT public.audit_seal($1)`, s.batch).Scan(&sealed)
	})
	return sealed, err
}

// Run seals pending entries every interval until ctx ends, so that no entry
// stays unsealed for much longer than interval. Errors are reported to
// onError and retried at the next tick.
func (s *Sealer) Run(ctx context.Context, interval time.Duration, onError func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.SealPending(ctx); err != nil && ctx.Err() == nil && onError != nil {
				onError(err)
			}
		}
	}
}

// VerifyResult is what a walk of the chain found.
type VerifyResult struct {
	OK bool `json:"ok"`
	// Entries is the number of sealed entries walked.
	Entries int64 `json:"entries"`
	// Unsealed is the number of entries written but not yet chained.
	Unsealed int64 `json:"unsealed"`
	// FirstBadSeq names the first entry (by seq) whose link does not match.
	FirstBadSeq *int64 `json:"first_bad_seq,omitempty"`
	// FirstBadPos is the chain position where the walk broke.
	FirstBadPos *int64 `json:"first_bad_pos,omitempty"`
	// Problem names the kind of failure (ProblemChain, ProblemHead, …).
	Problem string `json:"problem,omitempty"`
	// Reason says what did not match; it names no data.
	Reason string `json:"reason,omitempty"`
	// Head (head_status) says how the anchored head given was found, when one was:
	// "extended" (its link is in the chain with its hash) or "purged"
	// (retention has since purged its link, lawfully by its age).
	Head string `json:"head_status,omitempty"`
	// Checkpoint is where the walk started when retention has purged the
	// chain's head; nil when the chain is whole from its first entry.
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
}

// Checkpoint stands in for the purged head of the chain: the position and
// hash of the last link purged. Verify starts from the newest one and checks
// that the first link kept continues from its hash.
type Checkpoint struct {
	Pos        int64     `json:"pos"`
	EntrySeq   int64     `json:"entry_seq"`
	OccurredAt time.Time `json:"occurred_at"`
	CreatedAt  time.Time `json:"created_at"`
	// Purged counts every entry purged, across all checkpoints.
	Purged int64 `json:"purged"`

	hash []byte
}

// newestCheckpoint returns the newest checkpoint, or nil when none exists.
func newestCheckpoint(ctx context.Context, db *postgres.DB) (*Checkpoint, error) {
	var cp Checkpoint
	err := db.Pool.QueryRow(ctx, `
		SELECT pos, hash, entry_seq, occurred_at, created_at, (SELECT sum(purged) FROM audit_checkpoints)::bigint
		FROM audit_checkpoints ORDER BY pos DESC LIMIT 1`).Scan(&cp.Pos, &cp.hash, &cp.EntrySeq, &cp.OccurredAt, &cp.CreatedAt, &cp.Purged)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &cp, nil
}

// verifyPage bounds the rows read per query during a walk.
const verifyPage = 5000

// DefaultSealInterval is how often the sealer runs unless configured
// (KLUIS_AUDIT_SEAL_INTERVAL).
const DefaultSealInterval = time.Second

// OverdueSealIntervals is how many seal intervals an entry may wait to be
// sealed before Verify fails: a sealer that stopped, or a queue that lost
// entries, must not go unnoticed.
const OverdueSealIntervals = 10

// Problems Verify names (VerifyResult.Problem).
const (
	// ProblemChain: a link does not match its entry or the link before.
	ProblemChain = "chain"
	// ProblemHead: the chain does not extend the anchored head given.
	ProblemHead = "head"
	// ProblemHeadSignature: the head given is not signed by kluis's
	// audit-head key.
	ProblemHeadSignature = "head_signature"
	// ProblemOverdue: an entry older than OverdueSealIntervals seal
	// intervals was still unsealed when the check began.
	ProblemOverdue = "overdue_unsealed"
	// ProblemOrphan: an entry is neither sealed nor waiting to be sealed.
	ProblemOrphan = "orphaned_entry"
)

// VerifyOptions tunes Verify.
type VerifyOptions struct {
	// SealInterval is the sealer's interval: an entry unsealed for
	// OverdueSealIntervals of them fails the check. Zero skips that check,
	// for callers (tests) where no sealer runs.
	SealInterval time.Duration
	// Head, when set, is an anchored head kept outside the database: the
	// chain must still extend it. Key checks its signature and must be set
	// with it.
	Head *Head
	Key  HeadKey
}

// Verify is VerifyWith without a head, and without the check for overdue
// entries (which needs the sealer's interval).
func Verify(ctx context.Context, db *postgres.DB) (VerifyResult, error) {
	return VerifyWith(ctx, db, VerifyOptions{})
}

// VerifyWith walks the whole chain in order, recomputing every hash, and
// stops at the first entry that does not match: an edited entry, an edited
// or missing link, or a link out of order. When retention has purged the
// chain's head, the walk starts from the newest checkpoint (reported in the
// result): the first link kept must continue from the checkpoint's hash.
// It also fails when the chain does not extend opts.Head, when an entry
// older than OverdueSealIntervals seal intervals was unsealed before the
// check began, and when an entry is neither sealed nor queued.
func VerifyWith(ctx context.Context, db *postgres.DB, opts VerifyOptions) (VerifyResult, error) {
	res := VerifyResult{OK: true}
	var overdue *int64
	if opts.SealInterval > 0 {
		var err error
		if overdue, err = overdueEntry(ctx, db, OverdueSealIntervals*opts.SealInterval); err != nil {
			return res, fmt.Errorf("audit verify: %w", postgres.Translate(err))
		}
	}
	if err := walk(ctx, db, &res); err != nil {
		return res, fmt.Errorf("audit verify: %w", postgres.Translate(err))
	}
	if res.OK && opts.Head != nil {
		if err := checkHead(ctx, db, opts.Key, *opts.Head, &res); err != nil {
			return res, fmt.Errorf("audit verify: %w", postgres.Translate(err))
		}
	}
	var orphan *int64
	err := db.Pool.QueryRow(ctx, `
		SELECT count(*), min(e.seq) FILTER (WHERE NOT EXISTS (SELECT 1 FROM audit_pending p WHERE p.seq = e.seq))
		FROM audit_entries e
		WHERE NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.entry_seq = e.seq)`).Scan(&res.Unsealed, &orphan)
	if err != nil {
		return res, fmt.Errorf("audit verify: %w", postgres.Translate(err))
	}
	switch {
	case !res.OK:
	case overdue != nil:
		res.fail(ProblemOverdue, fmt.Sprintf("entry seq %d was still unsealed %d seal intervals (%s) after it was written: is the sealer running?",
			*overdue, OverdueSealIntervals, OverdueSealIntervals*opts.SealInterval), overdue, nil)
	case orphan != nil:
		res.fail(ProblemOrphan, fmt.Sprintf("entry seq %d is neither sealed nor waiting to be sealed", *orphan), orphan, nil)
	}
	return res, nil
}

func (r *VerifyResult) fail(problem, reason string, seq, pos *int64) {
	r.OK, r.Problem, r.Reason = false, problem, reason
	r.FirstBadSeq, r.FirstBadPos = seq, pos
}

// overdueEntry returns the oldest entry still waiting to be sealed that was
// written more than age ago, by the database's clock, or nil.
func overdueEntry(ctx context.Context, db *postgres.DB, age time.Duration) (*int64, error) {
	var seq *int64
	err := db.Pool.QueryRow(ctx, `
		SELECT min(e.seq) FROM audit_pending p JOIN audit_entries e ON e.seq = p.seq
		WHERE e.occurred_at < statement_timestamp() - make_interval(secs => $1)`, age.Seconds()).Scan(&seq)
	return seq, err
}

// walk checks every link from the newest checkpoint (or the start) on.
func walk(ctx context.Context, db *postgres.DB, res *VerifyResult) error {
	prev, last := genesis, int64(0)
	cp, err := newestCheckpoint(ctx, db)
	if err != nil {
		return err
	}
	if cp != nil {
		res.Checkpoint = cp
		prev, last = cp.hash, cp.Pos
	}
	for {
		n, bad, err := verifyPageFrom(ctx, db, &prev, &last, res)
		if err != nil || bad || n < verifyPage {
			return err
		}
	}
}

func verifyPageFrom(ctx context.Context, db *postgres.DB, prev *[]byte, last *int64, res *VerifyResult) (int, bool, error) {
	rows, err := db.Pool.Query(ctx, `SELECT c.pos, c.prev_hash, c.hash, `+entryColumns+`
		FROM audit_chain c JOIN audit_entries e ON e.seq = c.entry_seq
		WHERE c.pos > $1 ORDER BY c.pos LIMIT $2`, *last, verifyPage)
	if err != nil {
		return 0, false, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
		var pos int64
		var storedPrev, storedHash []byte
		var r chainRow
		if err := rows.Scan(&pos, &storedPrev, &storedHash, &r.seq, &r.occurredAt, &r.actorKind, &r.actor, &r.action,
			&r.target, &r.outcome, &r.subject, &r.requestID, &r.details); err != nil {
			return n, false, err
		}
		if reason := checkLink(*prev, *last, pos, storedPrev, storedHash, r); reason != "" {
			res.fail(ProblemChain, reason, &r.seq, &pos)
			return n, true, nil
		}
		res.Entries++
		*prev, *last = storedHash, pos
	}
	return n, false, rows.Err()
}

func checkLink(prev []byte, last, pos int64, storedPrev, storedHash []byte, r chainRow) string {
	switch {
	case pos != last+1:
		return fmt.Sprintf("chain position %d follows %d: links are missing", pos, last)
	case subtle.ConstantTimeCompare(storedPrev, prev) != 1:
		return "the link's previous hash does not match the entry before it"
	case subtle.ConstantTimeCompare(entryHash(prev, pos, r), storedHash) != 1:
		return "the entry's contents do not match its hash"
	}
	return ""
}
