// Package sandboxrail is the sandbox payment rail: it plays the bank for
// micro-deposits of the sandbox's accounts (and of manual ones when the
// sandbox is the default bank provider). Deposits post after a
// configurable delay (default: at once) and can be told to return. The rail
// keeps the deposits so that the sandbox deposits route can show them, as a
// bank statement would: sealed (AES-256-GCM under a key derived from the
// verification system key, bound to the verification), never in the clear.
package sandboxrail

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/verification"
)

// MACer computes keyed MACs under a named system key (vault.SystemKeys).
type MACer interface {
	MAC(name string, parts ...[]byte) ([]byte, error)
}

// Rail is the sandbox rail. It is safe for concurrent use, and its state is
// in Postgres, shared by every instance.
type Rail struct {
	db    *postgres.DB
	keys  MACer
	delay time.Duration
	clock kluis.Clock
}

// New returns the sandbox rail. Deposits post delay after they are sent.
func New(db *postgres.DB, keys MACer, delay time.Duration, clock kluis.Clock) *Rail {
	if clock == nil {
		clock = kluis.SystemClock{}
	}
	return &Rail{db: db, keys: keys, delay: delay, clock: clock}
}

var _ verification.SandboxRail = (*Rail)(nil)

// Name implements verification.Rail.
func (r *Rail) Name() string { return "sandbox" }

// sealed is what the rail seals of the deposits.
type sealed struct {
	Amounts []int  `json:"a"`
	Code    string `json:"c,omitempty"`
}

func (r *Rail) aead() (cipher.AEAD, error) {
	key, err := r.keys.MAC(verification.SystemKey, []byte("kluis/sandbox-rail/seal-key/v1"))
	if err != nil {
		return nil, kluis.Unavailable("key store", err)
	}
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Send implements verification.Rail: it records the deposits, sealed, to
// post after the delay. Sending again for a verification replaces its
// deposits and keeps its reference.
func (r *Rail) Send(ctx context.Context, d verification.Deposits) (string, error) {
	if !kluis.ValidID(kluis.PrefixVerification, d.VerificationID) || (len(d.AmountsCents) == 0) {
		return "", kluis.Errorf(kluis.EInvalid, "sandbox rail: deposits need a verification and amounts")
	}
	plain, err := json.Marshal(sealed{Amounts: d.AmountsCents, Code: d.Code})
	if err != nil {
		return "", err
	}
	defer clear(plain)
	aead, err := r.aead()
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	box := aead.Seal(nonce, nonce, plain, []byte(d.VerificationID))
	var ref string
	err = r.db.Pool.QueryRow(ctx, `
		INSERT INTO sandbox_rail_deposits (ref, verification_id, sealed, post_at)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (verification_id) DO UPDATE SET sealed = EXCLUDED.sealed, post_at = EXCLUDED.post_at, returned = false
		RETURNING ref`, kluis.NewID("srd_"), d.VerificationID, box, r.clock.Now().Add(r.delay)).Scan(&ref)
	if err != nil {
		return "", kluis.Unavailable("payment rail", postgres.Translate(err))
	}
	return ref, nil
}

// Status implements verification.Rail.
func (r *Rail) Status(ctx context.Context, ref string) (verification.RailStatus, error) {
	var postAt time.Time
	var returned bool
	err := r.db.Pool.QueryRow(ctx, `SELECT post_at, returned FROM sandbox_rail_deposits WHERE ref = $1`, ref).Scan(&postAt, &returned)
	if err != nil {
		return "", fmt.Errorf("sandbox rail: status: %w", postgres.Translate(err))
	}
	switch {
	case returned:
		return verification.RailReturned, nil
	case !r.clock.Now().Before(postAt):
		return verification.RailPosted, nil
	}
	return verification.RailInFlight, nil
}

// Posted implements verification.SandboxRail: the deposits as the bank
// shows them, once posted.
func (r *Rail) Posted(ctx context.Context, ref string) (verification.Deposits, error) {
	var vid string
	var box []byte
	var postAt time.Time
	var returned bool
	err := r.db.Pool.QueryRow(ctx, `SELECT verification_id, sealed, post_at, returned FROM sandbox_rail_deposits WHERE ref = $1`, ref).
		Scan(&vid, &box, &postAt, &returned)
	if err != nil {
		return verification.Deposits{}, fmt.Errorf("sandbox rail: read: %w", postgres.Translate(err))
	}
	if returned || r.clock.Now().Before(postAt) {
		return verification.Deposits{}, kluis.Errorf(kluis.EConflict, "the deposits have not posted")
	}
	aead, err := r.aead()
	if err != nil {
		return verification.Deposits{}, err
	}
	if len(box) < aead.NonceSize() {
		return verification.Deposits{}, kluis.Errorf(kluis.EInternal, "internal error")
	}
	plain, err := aead.Open(nil, box[:aead.NonceSize()], box[aead.NonceSize():], []byte(vid))
	if err != nil {
		return verification.Deposits{}, kluis.Wrap(kluis.EInternal, "internal error", errors.New("sandbox rail: deposits do not open"))
	}
	defer clear(plain)
	var s sealed
	if err := json.Unmarshal(plain, &s); err != nil {
		return verification.Deposits{}, kluis.Errorf(kluis.EInternal, "internal error")
	}
	return verification.Deposits{VerificationID: vid, AmountsCents: s.Amounts, Code: s.Code}, nil
}

// Return implements verification.SandboxRail.
func (r *Rail) Return(ctx context.Context, ref string) error {
	tag, err := r.db.Pool.Exec(ctx, `UPDATE sandbox_rail_deposits SET returned = true WHERE ref = $1`, ref)
	if err != nil {
		return fmt.Errorf("sandbox rail: return: %w", postgres.Translate(err))
	}
	if tag.RowsAffected() == 0 {
		return kluis.Errorf(kluis.ENotFound, "not found")
	}
	return nil
}
