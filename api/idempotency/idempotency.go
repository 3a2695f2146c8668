// Package idempotency stores the answers to POSTs made with an
// Idempotency-Key (docs/SECURITY.md), so that a retried request replays the first
// answer instead of acting twice. It holds the table's SQL and the sealing
// of stored bodies, and makes the claims (NewClaim: keyed hashes of the
// caller, the key and the request); the api package's middleware
// (api/middleware_idempotency.go) decides when to use it.
//
// Claims are taken with INSERT … ON CONFLICT, so two requests with one key,
// on one instance or two, cannot both run: the loser sees the row and
// answers from it (replay, in use, or reused with another request).
package idempotency

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
)

// Outcome is what Begin found.
type Outcome int

// Outcomes of Begin.
const (
	// Claimed: this request holds the key and runs; Complete or Release it.
	Claimed Outcome = iota
	// Replay: the key's first request finished; Stored holds its answer.
	Replay
	// InUse: the key's first request is still running.
	InUse
	// Reused: the key was used with another request (another fingerprint).
	Reused
)

// Claim identifies one use of a key. ScopeHash and KeyHash name the row;
// Fingerprint is the request's; BodyKey seals the stored body (32 bytes,
// derived by the caller from the raw key, never stored).
type Claim struct {
	ScopeHash, KeyHash, Fingerprint []byte
	BodyKey                         []byte
	// LockFor is how long the claim holds before another request may take
	// it over (the holder is then presumed dead): the request deadline and
	// some.
	LockFor time.Duration
	// TTL is how long the answer is kept (at least 24 hours).
	TTL time.Duration
	// SubjectID is the data subject (internal id) the request belongs to or
	// acts on (a user's own request, or a staff request about them):
	// erasure deletes the subject's stored answers by it. It may be set
	// while the request runs; Complete records it.
	SubjectID *string

	token []byte
}

// Response is a stored answer.
type Response struct {
	Status  int
	Headers http.Header
	Body    []byte
}

// sealedResponse is what response_body holds, sealed: the headers (a
// Location names a resource) and the body.
type sealedResponse struct {
	Headers http.Header `json:"h"`
	Body    []byte      `json:"b"`
}

// Store is the idempotency_keys table.
type Store struct{ db *postgres.DB }

// NewStore returns a Store over db.
func NewStore(db *postgres.DB) *Store { return &Store{db: db} }

// ErrSealed means a stored body did not open under the key given: the row
// was tampered with, or the system key changed.
var ErrSealed = errors.New("idempotency: stored answer does not open")

// Begin claims the key for this request, or reports why it cannot: the
// stored answer (Replay, with the response), InUse or Reused. A claim whose
// holder outlived LockFor, and an expired answer, are taken over.
func (s *Store) Begin(ctx context.Context, c *Claim) (Outcome, *Response, error) {
	c.token = make([]byte, 16)
	if _, err := rand.Read(c.token); err != nil {
		return 0, nil, fmt.Errorf("idempotency: lock token: %w", err)
	}
	var claimed bool
	err := s.db.Pool.QueryRow(ctx, `
		INSERT INTO idempotency_keys AS k (scope_hash, key_hash, fingerprint, status, lock_token, locked_until, expires_at, subject_id)
		VALUES ($1, $2, $3, 'in_progress', $4, now() + $5::interval, now() + $6::interval, $7)
		ON CONFLICT (scope_hash, key_hash) DO UPDATE
		   SET fingerprint = EXCLUDED.fingerprint, status = 'in_progress', lock_token = EXCLUDED.lock_token, subject_id = EXCLUDED.subject_id,
		       locked_until = EXCLUDED.locked_until, expires_at = EXCLUDED.expires_at, created_at = now(),
		       response_status = NULL, response_body = NULL
		 WHERE k.expires_at < now() OR (k.status = 'in_progress' AND k.locked_until < now())
		RETURNING true`,
		c.ScopeHash, c.KeyHash, c.Fingerprint, c.token, interval(c.LockFor), interval(c.TTL), c.SubjectID).Scan(&claimed)
	if err == nil {
		return Claimed, nil, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, nil, postgres.Translate(err)
	}
	return s.existing(ctx, c)
}

// existing reads the row another request holds.
func (s *Store) existing(ctx context.Context, c *Claim) (Outcome, *Response, error) {
	var (
		fp, body []byte
		status   string
		code     *int
	)
	err := s.db.Pool.QueryRow(ctx, `
		SELECT fingerprint, status, response_status, response_body
		  FROM idempotency_keys WHERE scope_hash = $1 AND key_hash = $2`,
		c.ScopeHash, c.KeyHash).Scan(&fp, &status, &code, &body)
	if errors.Is(err, pgx.ErrNoRows) {
		// Released between our insert and this read: the first request
		// failed and a retry may run; say in use so the client retries.
		return InUse, nil, nil
	}
	if err != nil {
		return 0, nil, postgres.Translate(err)
	}
	switch {
	case string(fp) != string(c.Fingerprint):
		return Reused, nil, nil
	case status != "done" || code == nil:
		return InUse, nil, nil
	}
	plain, err := open(c.BodyKey, aad(c), body)
	if err != nil {
		return 0, nil, err
	}
	var sealed sealedResponse
	if err := json.Unmarshal(plain, &sealed); err != nil {
		return 0, nil, ErrSealed
	}
	return Replay, &Response{Status: *code, Headers: sealed.Headers, Body: sealed.Body}, nil
}

// Complete stores the answer of a claimed request, sealed. It changes
// nothing if the claim was taken over meanwhile.
func (s *Store) Complete(ctx context.Context, c *Claim, r Response) error {
	plain, err := json.Marshal(sealedResponse{Headers: r.Headers, Body: r.Body})
	if err != nil {
		return fmt.Errorf("idempotency: encode answer: %w", err)
	}
	sealed, err := seal(c.BodyKey, aad(c), plain)
	if err != nil {
		return err
	}
	update := func(q postgres.Querier, subject *string) error {
		_, err := q.Exec(ctx, `
			UPDATE idempotency_keys
			   SET status = 'done', response_status = $4, response_body = $5, subject_id = COALESCE($6, subject_id)
			 WHERE scope_hash = $1 AND key_hash = $2 AND lock_token = $3 AND status = 'in_progress'`,
			c.ScopeHash, c.KeyHash, c.token, r.Status, sealed, subject)
		return postgres.Translate(err)
	}
	if c.SubjectID == nil {
		return update(s.db.Pool, nil)
	}
	// The subject may have been named while the request ran (a staff
	// request about a subject); one erased meanwhile is not referenced.
	// The vault, which owns subjects, says whether it still exists and
	// keeps it so until the row that refers to it is written.
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		ok, err := vault.SubjectExists(ctx, tx, *c.SubjectID)
		if err != nil {
			return err
		}
		if !ok {
			return update(tx, nil)
		}
		return update(tx, c.SubjectID)
	})
}

// Release gives up a claim (the request failed in a way a retry may fix),
// so that the next request with the key runs.
func (s *Store) Release(ctx context.Context, c *Claim) error {
	_, err := s.db.Pool.Exec(ctx, `
		DELETE FROM idempotency_keys
		 WHERE scope_hash = $1 AND key_hash = $2 AND lock_token = $3 AND status = 'in_progress'`,
		c.ScopeHash, c.KeyHash, c.token)
	return postgres.Translate(err)
}

// Purge deletes up to limit expired rows and returns how many it deleted.
func (s *Store) Purge(ctx context.Context, limit int) (int64, error) {
	tag, err := s.db.Pool.Exec(ctx, `
		DELETE FROM idempotency_keys WHERE ctid IN (
		  SELECT ctid FROM idempotency_keys WHERE expires_at < now() LIMIT $1)`, limit)
	if err != nil {
		return 0, postgres.Translate(err)
	}
	return tag.RowsAffected(), nil
}

// interval renders d for Postgres' interval type in whole milliseconds.
func interval(d time.Duration) string { return fmt.Sprintf("%d milliseconds", d.Milliseconds()) }

// aad binds a sealed body to its row, so that a body moved to another row
// does not open.
func aad(c *Claim) []byte {
	b := make([]byte, 0, 8+len(c.ScopeHash)+len(c.KeyHash))
	b = binary.BigEndian.AppendUint32(b, uint32(len(c.ScopeHash)))
	b = append(b, c.ScopeHash...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(c.KeyHash)))
	return append(b, c.KeyHash...)
}

func seal(key, ad, plain []byte) ([]byte, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize(), gcm.NonceSize()+len(plain)+gcm.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("idempotency: nonce: %w", err)
	}
	return gcm.Seal(nonce, nonce, plain, ad), nil
}

func open(key, ad, sealed []byte) ([]byte, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < gcm.NonceSize() {
		return nil, ErrSealed
	}
	plain, err := gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], ad)
	if err != nil {
		return nil, ErrSealed
	}
	return plain, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, errors.New("idempotency: body key must be 32 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("idempotency: %w", err)
	}
	return cipher.NewGCM(block)
}
