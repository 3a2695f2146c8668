package audit

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/events"
	"github.com/kluis-dev/kluis/postgres"
)

// Head is the chain's head as kluis anchors it outside the database: the
// position and hash of the newest link, the time of its entry (the
// database's clock, which no writer sets), and a signature under the
// audit-head system key. Kept elsewhere (an app's event store, a log store,
// a ticket), it lets Verify find a chain that was wiped and rebuilt, even by
// the database's owner: nobody who can only write the database can sign a
// head for the rebuilt chain, and the rebuilt chain does not extend the
// heads kept.
type Head struct {
	Pos  int64     `json:"pos"`
	Hash string    `json:"hash"` // hex, 64 characters
	At   time.Time `json:"at"`
	Sig  string    `json:"sig"`
}

// HeadKey signs heads and checks their signatures. The vault's SystemKeys
// implements it with an HMAC-SHA256 under the audit-head key, which only the
// key provider can unwrap. CheckAuditHead returns an error saying why a
// signature does not verify.
type HeadKey interface {
	SignAuditHead(msg []byte) (string, error)
	CheckAuditHead(msg []byte, sig string) error
}

// message is what a head's signature covers: the position, the hash and the
// time (Unix microseconds), each fixed-size.
func (h Head) message() ([]byte, error) {
	hash, err := hex.DecodeString(h.Hash)
	if err != nil || len(hash) != len(genesis) {
		return nil, kluis.Errorf(kluis.EInvalid, "head.hash must be %d hexadecimal characters", 2*len(genesis))
	}
	if h.Pos < 0 {
		return nil, kluis.Errorf(kluis.EInvalid, "head.pos must not be negative")
	}
	if h.At.IsZero() {
		return nil, kluis.Errorf(kluis.EInvalid, "head.at is required")
	}
	var b bytes.Buffer
	_ = binary.Write(&b, binary.BigEndian, h.Pos)
	b.Write(hash)
	_ = binary.Write(&b, binary.BigEndian, h.At.UnixMicro())
	return b.Bytes(), nil
}

// Validate checks that h is well formed (not that it is signed).
func (h Head) Validate() error {
	if _, err := h.message(); err != nil {
		return err
	}
	if h.Sig == "" {
		return kluis.Errorf(kluis.EInvalid, "head.sig is required")
	}
	return nil
}

// CurrentHead returns the chain's head now, signed with key: the newest
// link, or the newest checkpoint once retention has purged every link, or
// position 0 (the genesis hash, signed at the present time) for an empty
// chain.
func CurrentHead(ctx context.Context, db *postgres.DB, key HeadKey) (Head, error) {
	var h Head
	var hash []byte
	err := db.Pool.QueryRow(ctx, `
		SELECT c.pos, c.hash, e.occurred_at FROM audit_chain c JOIN audit_entries e ON e.seq = c.entry_seq
		ORDER BY c.pos DESC LIMIT 1`).Scan(&h.Pos, &hash, &h.At)
	if errors.Is(err, pgx.ErrNoRows) {
		err = db.Pool.QueryRow(ctx, `SELECT pos, hash, occurred_at FROM audit_checkpoints ORDER BY pos DESC LIMIT 1`).Scan(&h.Pos, &hash, &h.At)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		err = db.Pool.QueryRow(ctx, `SELECT statement_timestamp()`).Scan(&h.At)
		hash = genesis
	}
	if err != nil {
		return Head{}, fmt.Errorf("audit head: %w", postgres.Translate(err))
	}
	h.Hash, h.At = hex.EncodeToString(hash), h.At.UTC().Truncate(time.Microsecond)
	msg, err := h.message()
	if err != nil {
		return Head{}, err
	}
	if h.Sig, err = key.SignAuditHead(msg); err != nil {
		return Head{}, fmt.Errorf("audit head: sign: %w", err)
	}
	return h, nil
}

// checkHead fails res unless h is signed by key and the chain extends it:
// the link at h.Pos is there with h.Hash (so the walk, which found every
// later link whole, went through it). A link that is gone counts only when
// retention could lawfully have purged it (its entry is older than
// MinRetention), and a checkpoint at exactly that position must then
// agree.
func checkHead(ctx context.Context, db *postgres.DB, key HeadKey, h Head, res *VerifyResult) error {
	msg, err := h.message()
	if err != nil {
		res.fail(ProblemHead, "the head is malformed: "+err.Error(), nil, nil)
		return nil
	}
	if key == nil {
		return errors.New("no audit-head key to check the head's signature with")
	}
	if err := key.CheckAuditHead(msg, h.Sig); err != nil {
		res.fail(ProblemHeadSignature, "the head's signature does not verify: "+err.Error(), nil, nil)
		return nil
	}
	if h.Pos == 0 {
		res.Head = "extended" // every chain extends the genesis
		return nil
	}
	pos := &h.Pos
	var stored []byte
	err = db.Pool.QueryRow(ctx, `SELECT hash FROM audit_chain WHERE pos = $1`, h.Pos).Scan(&stored)
	switch {
	case err == nil:
		if subtle.ConstantTimeCompare(stored, hexBytes(h.Hash)) != 1 {
			res.fail(ProblemHead, fmt.Sprintf("the chain does not extend the head: the link at position %d has another hash", h.Pos), nil, pos)
			return nil
		}
		res.Head = "extended"
		return nil
	case !errors.Is(err, pgx.ErrNoRows):
		return err
	}
	return checkPurgedHead(ctx, db, h, res)
}

// checkPurgedHead decides about a head whose link is not in the chain.
func checkPurgedHead(ctx context.Context, db *postgres.DB, h Head, res *VerifyResult) error {
	pos := &h.Pos
	var newest int64
	var lawful bool
	var cpHash []byte
	err := db.Pool.QueryRow(ctx, `
		SELECT coalesce((SELECT max(pos) FROM audit_checkpoints), 0),
		       $2 < statement_timestamp() - make_interval(days => $3),
		       (SELECT hash FROM audit_checkpoints WHERE pos = $1)`,
		h.Pos, h.At, int(MinRetention/day)).Scan(&newest, &lawful, &cpHash)
	if err != nil {
		return err
	}
	switch {
	case h.Pos > newest:
		res.fail(ProblemHead, fmt.Sprintf("the chain does not extend the head: the entry at position %d is missing", h.Pos), nil, pos)
	case !lawful:
		res.fail(ProblemHead, fmt.Sprintf("the chain does not extend the head: the entry at position %d is missing, "+
			"and it is younger than the %d days audit entries are kept", h.Pos, int(MinRetention/day)), nil, pos)
	case cpHash != nil && subtle.ConstantTimeCompare(cpHash, hexBytes(h.Hash)) != 1:
		res.fail(ProblemHead, fmt.Sprintf("the chain does not extend the head: the checkpoint at position %d has another hash", h.Pos), nil, pos)
	default:
		res.Head = "purged"
	}
	return nil
}

func hexBytes(s string) []byte {
	b, _ := hex.DecodeString(s)
	return b
}

// ParseHead reads an anchored head as it was kept: the line `kluis audit
// head` prints, an `audit.head` event as delivered (its data holds the head,
// with the position as a string), or that event's data alone.
func ParseHead(raw []byte) (Head, error) {
	var probe struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return Head{}, kluis.Errorf(kluis.EInvalid, "the head is not a JSON object")
	}
	if probe.Type == "audit.head" && len(probe.Data) > 0 {
		raw = probe.Data
	}
	var loose struct {
		Pos  json.RawMessage `json:"pos"`
		Hash string          `json:"hash"`
		At   time.Time       `json:"at"`
		Sig  string          `json:"sig"`
	}
	if err := json.Unmarshal(raw, &loose); err != nil {
		return Head{}, kluis.Errorf(kluis.EInvalid, "the head's fields do not parse")
	}
	pos, err := strconv.ParseInt(string(bytes.Trim(loose.Pos, `"`)), 10, 64)
	if err != nil {
		return Head{}, kluis.Errorf(kluis.EInvalid, "head.pos is not a number")
	}
	h := Head{Pos: pos, Hash: loose.Hash, At: loose.At, Sig: loose.Sig}
	return h, h.Validate()
}

// ErrHeadNotExtended is returned by PublishHead when the chain no longer
// extends the head published before: it was rewritten since. Nothing is
// published then, so that a rewritten chain never gets a signed head.
var ErrHeadNotExtended = errors.New("the audit chain does not extend the head published before")

// PublishHead signs the chain's current head and writes it as an
// audit.head event (events.AuditHead) for the apps' endpoints, after
// checking that the chain still extends the newest head published before.
// The caller logs the head it returns.
func PublishHead(ctx context.Context, db *postgres.DB, key HeadKey) (Head, error) {
	if err := checkPublished(ctx, db, key); err != nil {
		return Head{}, err
	}
	h, err := CurrentHead(ctx, db, key)
	if err != nil {
		return Head{}, err
	}
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := events.Enqueue(ctx, tx, events.Event{Type: events.AuditHead, Data: map[string]string{
			"pos": strconv.FormatInt(h.Pos, 10), "hash": h.Hash, "at": h.At.Format(time.RFC3339Nano), "sig": h.Sig,
		}})
		return err
	})
	if err != nil {
		return Head{}, fmt.Errorf("audit head: publish: %w", err)
	}
	return h, nil
}

// checkPublished checks the chain against the newest audit.head event still
// in the outbox (retention keeps them for a while).
func checkPublished(ctx context.Context, db *postgres.DB, key HeadKey) error {
	data, err := events.Latest(ctx, db, events.AuditHead)
	if err != nil || data == nil {
		return err
	}
	prev, err := ParseHead(data)
	if err != nil {
		return fmt.Errorf("%w: the newest published head does not parse", ErrHeadNotExtended)
	}
	var res VerifyResult
	res.OK = true
	if err := checkHead(ctx, db, key, prev, &res); err != nil {
		return fmt.Errorf("audit head: %w", postgres.Translate(err))
	}
	if !res.OK {
		return fmt.Errorf("%w (position %d): %s", ErrHeadNotExtended, prev.Pos, res.Reason)
	}
	return nil
}
