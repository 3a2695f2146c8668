// Package events is kluis's outbox of event webhooks to client apps: a
// feature writes an event with Enqueue in the same transaction as the change
// it announces, and a Worker delivers it to every configured app endpoint,
// signed (Kluis-Signature), retried with exponential backoff and jitter, each
// attempt recorded. Several workers (one per kluis instance) share the work
// through FOR UPDATE SKIP LOCKED and leases, and a restarted worker picks up
// where the outbox stands.
//
// Events carry identifiers and statuses only: never an amount, a code, an
// account number or a token. Enqueue refuses anything else.
package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// Event types kluis sends.
const (
	ItemLoginRequired    = "item.login_required"
	ItemRevoked          = "item.revoked"
	ItemRelinkRequired   = "item.relink_required"
	ItemTokenRotated     = "item.token_rotated" // #nosec G101 -- an event type, not a credential
	VerificationPosted   = "verification.posted"
	VerificationVerified = "verification.verified"
	VerificationFailed   = "verification.failed"
	VerificationExpired  = "verification.expired"
	VerificationReturned = "verification.returned"
	// AuditHead carries the audit chain's signed head (audit.Head), so
	// that apps keep a copy outside kluis's database: its data is
	// "pos", "hash", "at" and "sig", each checked against its own pattern.
	AuditHead = "audit.head"
)

// knownTypes are the types Enqueue accepts: a typo is a bug, not a new type.
var knownTypes = map[string]bool{
	ItemLoginRequired: true, ItemRevoked: true, VerificationPosted: true, VerificationVerified: true,
	ItemRelinkRequired: true, ItemTokenRotated: true,
	VerificationFailed: true, VerificationExpired: true, VerificationReturned: true,
	AuditHead: true,
}

// headData are the patterns of an audit.head event's data, the only event
// whose values are numbers, hashes and times: none of them can carry a
// secret.
var headData = map[string]*regexp.Regexp{
	"pos":  regexp.MustCompile(`^[0-9]{1,19}$`),
	"hash": regexp.MustCompile(`^[0-9a-f]{64}$`),
	"at":   regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$`),
	"sig":  regexp.MustCompile(`^v[0-9]{1,9}:[A-Za-z0-9_-]{43}$`),
}

// PrefixEvent prefixes event ids.
const PrefixEvent = "evt_"

// Event is one event for client apps.
type Event struct {
	// Type is one of the constants above.
	Type string
	// Data holds identifiers ("item_id": "itm_…") and statuses ("status":
	// "verified"). Keys are lower-case words; values are kluis identifiers
	// or lower-case words. Anything else (digits, free text) is refused, so
	// that no secret can ride along.
	Data map[string]string
	// OccurredAt is when the change happened; zero means now.
	OccurredAt time.Time
}

// Payload is the body delivered to app endpoints: the event id is there for
// the receiver's deduplication.
type Payload struct {
	ID        string            `json:"id"`
	Type      string            `json:"type"`
	CreatedAt time.Time         `json:"created_at"`
	Data      map[string]string `json:"data"`
}

var (
	dataKey   = regexp.MustCompile(`^[a-z][a-z_]{0,31}$`)
	dataWord  = regexp.MustCompile(`^[a-z][a-z_]{0,31}$`)
	dataIDish = regexp.MustCompile(`^[a-z]{2,5}_[a-z2-7]{32}$`)
)

// Validate checks that e can be sent: a known type and data of identifiers
// and statuses only.
func (e Event) Validate() error {
	if !knownTypes[e.Type] {
		return kluis.Errorf(kluis.EInvalid, "events: unknown event type %q", e.Type)
	}
	if len(e.Data) > 16 {
		return kluis.Errorf(kluis.EInvalid, "events: too many data fields")
	}
	if e.Type == AuditHead {
		return validateHead(e.Data)
	}
	for k, v := range e.Data {
		if !dataKey.MatchString(k) {
			return kluis.Errorf(kluis.EInvalid, "events: data key is not a lower-case word")
		}
		if !dataWord.MatchString(v) && !dataIDish.MatchString(v) {
			// The value is not echoed: it might be the very secret refused.
			return kluis.Errorf(kluis.EInvalid, "events: data %q is neither an identifier nor a status", k)
		}
	}
	return nil
}

func validateHead(data map[string]string) error {
	if len(data) != len(headData) {
		return kluis.Errorf(kluis.EInvalid, "events: an audit.head event holds pos, hash, at and sig")
	}
	for k, re := range headData {
		if !re.MatchString(data[k]) {
			return kluis.Errorf(kluis.EInvalid, "events: audit.head data %q is malformed", k)
		}
	}
	return nil
}

// Enqueue writes e to the outbox in tx, so that the event exists exactly
// when the change it announces commits. It returns the event's id.
func Enqueue(ctx context.Context, tx pgx.Tx, e Event) (string, error) {
	if err := e.Validate(); err != nil {
		return "", err
	}
	at := e.OccurredAt
	if at.IsZero() {
		at = time.Now()
	}
	p := Payload{ID: kluis.NewID(PrefixEvent), Type: e.Type, CreatedAt: at.UTC().Truncate(time.Microsecond), Data: e.Data}
	if p.Data == nil {
		p.Data = map[string]string{}
	}
	body, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("events: encode: %w", err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO outbox (id, type, payload, created_at) VALUES ($1, $2, $3, $4)`,
		p.ID, p.Type, body, p.CreatedAt)
	if err != nil {
		return "", fmt.Errorf("events: enqueue: %w", postgres.Translate(err))
	}
	return p.ID, nil
}

// Latest returns the data of the newest event of type typ still in the
// outbox, or nil when there is none. The audit-head job checks the chain
// against the head it published last.
func Latest(ctx context.Context, db *postgres.DB, typ string) (json.RawMessage, error) {
	var data json.RawMessage
	err := db.Pool.QueryRow(ctx, `SELECT payload->'data' FROM outbox WHERE type = $1 ORDER BY created_at DESC LIMIT 1`, typ).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("events: latest %s: %w", typ, postgres.Translate(err))
	}
	return data, nil
}
