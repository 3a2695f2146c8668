// Package hosted keeps the state of kluis's hosted pages (docs/HOSTED.md):
// the link page a link session's hosted_link_url opens and the verification
// page of a verification's hosted_verify_url.
//
// A page is reached with a page token of kluis's own: random, short-lived,
// single-purpose (one purpose, one object, one subject), stored only as a
// keyed HMAC, and good for one opening. Opening the page gives it a form
// token, and every form post trades its form token for a new one in one
// conditional UPDATE: a form is taken once, so a replayed post, a post from
// another site (which cannot read the page, and so cannot know the token)
// and a forged one all name a token that is not, or is no longer, there.
// The package holds no HTTP: api renders the pages.
package hosted

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// Purposes: what a page token opens.
const (
	PurposeLink   = "link"
	PurposeVerify = "verify"
)

// DefaultTTL is how long a page token may wait to be opened, and how long
// the opened page may be used.
const DefaultTTL = 30 * time.Minute

// PrefixPage prefixes page ids (never shown to anyone: rows only).
const PrefixPage = "hpg_"

// CodeRefused is the code of every refused page or form token: unknown,
// used, expired, for another object. One code for all, so that a caller
// learns nothing of which it was.
const CodeRefused = "page_token_refused"

// tokenPrefix marks kluis's page tokens, so that one found in a log or a
// leak is recognised (and secret scanners can look for it).
const (
	pageTokenPrefix = "kpt_"
	formTokenPrefix = "kft_"
	// maxTokenLen bounds a token a caller sends.
	maxTokenLen = 64
)

// MACer computes keyed MACs under a named system key (vault.SystemKeys).
type MACer interface {
	MAC(name string, parts ...[]byte) ([]byte, error)
}

// State is what a page remembers between its steps. None of it is secret:
// choices the user made, and the app's origin.
type State struct {
	// Origin is the app origin the page talks to by postMessage (the
	// drop-in's own origin, checked against the configured origins).
	Origin string `json:"origin,omitempty"`
	// Mode is how the drop-in opened the page: popup, iframe or redirect.
	Mode string `json:"mode,omitempty"`
	// InstitutionID is the institution the user chose.
	InstitutionID string `json:"institution_id,omitempty"`
	// SentTo is the OAuth provider the page sent the browser to: from
	// then on, the provider's callback for the page's object belongs to
	// the page (SentAway).
	SentTo string `json:"sent_to,omitempty"`
}

// Page is one opened page.
type Page struct {
	ID        string
	SubjectID string
	Purpose   string
	ObjectID  string
	Step      string
	State     State
	ExpiresAt time.Time
}

// Store keeps hosted pages in Postgres (table hosted_pages).
type Store struct {
	db    *postgres.DB
	macs  MACer
	clock kluis.Clock
}

// NewStore returns a Store; clock may be nil (the system clock).
func NewStore(db *postgres.DB, macs MACer, clock kluis.Clock) *Store {
	if clock == nil {
		clock = kluis.SystemClock{}
	}
	return &Store{db: db, macs: macs, clock: clock}
}

func (s *Store) now() time.Time { return s.clock.Now().UTC().Truncate(time.Microsecond) }

// refused is the one error of a token that does not open anything.
func refused() error {
	return kluis.Errorf(CodeRefused, "this page has expired or was already used: go back to the app and start again")
}

func newToken(prefix string) string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// SystemKey is the system key the hashes of hosted pages' tokens are keyed
// under (vault.SystemKeys; cmd/kluis gathers every part's names,
// SystemKeys, and loads them): a copy of the table cannot test guesses.
const SystemKey = "hosted-page"

// SystemKeys are the names of the system keys hosted pages need loaded.
func SystemKeys() []string { return []string{SystemKey} }

// hash is what hosted_pages keeps of a token: an HMAC under the hosted-page
// system key, bound to the token's kind. A key that cannot be had is a 503.
func (s *Store) hash(kind, token string) ([]byte, error) {
	m, err := s.macs.MAC(SystemKey, []byte("kluis/hosted/"+kind), []byte(token))
	if err != nil {
		return nil, kluis.Wrap(kluis.EUnavailable, "key store unavailable, try again later", errors.Join(kluis.ErrUnavailable, err))
	}
	return m, nil
}

// wellFormed says whether token could be one of kluis's tokens of prefix,
// so that junk is refused without a database round trip.
func wellFormed(prefix, token string) bool {
	return strings.HasPrefix(token, prefix) && len(token) <= maxTokenLen && len(token) > len(prefix)
}

// Issue makes a page token that opens the page of purpose for object (a
// link session or a verification) of subjectID, once, within ttl
// (DefaultTTL if zero). The token is in the answer only.
func (s *Store) Issue(ctx context.Context, purpose, objectID, subjectID string, ttl time.Duration) (string, time.Time, error) {
	if purpose != PurposeLink && purpose != PurposeVerify {
		return "", time.Time{}, fmt.Errorf("hosted: unknown purpose %q", purpose)
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	tok := newToken(pageTokenPrefix)
	h, err := s.hash("page", tok)
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.now()
	exp := now.Add(ttl)
	_, err = s.db.Pool.Exec(ctx, `INSERT INTO hosted_pages (id, subject_id, purpose, object_id, token_hash, expires_at, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $7)`, kluis.NewID(PrefixPage), subjectID, purpose, objectID, h, exp, now)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("hosted: issue: %w", postgres.Translate(err))
	}
	return tok, exp, nil
}

// Open opens the page a page token names for purpose and object, once: it
// records st and returns the page and its first form token. A token that
// is unknown, already opened, expired or for another page is CodeRefused.
func (s *Store) Open(ctx context.Context, purpose, objectID, pageToken string, st State) (Page, string, error) {
	if !wellFormed(pageTokenPrefix, pageToken) {
		return Page{}, "", refused()
	}
	h, err := s.hash("page", pageToken)
	if err != nil {
		return Page{}, "", err
	}
	form := newToken(formTokenPrefix)
	fh, err := s.hash("form", form)
	if err != nil {
		return Page{}, "", err
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return Page{}, "", err
	}
	now := s.now()
	p, err := scanPage(s.db.Pool.QueryRow(ctx, `UPDATE hosted_pages SET opened_at = $5, form_hash = $4, state = $6, updated_at = $5
		WHERE token_hash = $1 AND purpose = $2 AND object_id = $3 AND opened_at IS NULL AND expires_at > $5
		RETURNING `+pageColumns, h, purpose, objectID, fh, now, raw))
	if err != nil {
		return Page{}, "", err
	}
	return p, form, nil
}

// Take takes a form token of the page for purpose and object: the token
// is spent and the page's next form token returned with the page. A token
// that is unknown, spent, expired or of another page is CodeRefused; of two
// concurrent posts of one form, exactly one takes it.
func (s *Store) Take(ctx context.Context, purpose, objectID, formToken string) (Page, string, error) {
	if !wellFormed(formTokenPrefix, formToken) {
		return Page{}, "", refused()
	}
	h, err := s.hash("form", formToken)
	if err != nil {
		return Page{}, "", err
	}
	next := newToken(formTokenPrefix)
	nh, err := s.hash("form", next)
	if err != nil {
		return Page{}, "", err
	}
	p, err := scanPage(s.db.Pool.QueryRow(ctx, `UPDATE hosted_pages SET form_hash = $4, updated_at = $5
		WHERE form_hash = $1 AND purpose = $2 AND object_id = $3 AND expires_at > $5
		RETURNING `+pageColumns, h, purpose, objectID, nh, s.now()))
	if err != nil {
		return Page{}, "", err
	}
	return p, next, nil
}

// Save records the page's step and state after a form was taken; formToken
// is the page's current form token (the one Take returned), so that a page
// whose form was taken again meanwhile is not overwritten (CodeRefused).
func (s *Store) Save(ctx context.Context, p Page, formToken string) error {
	h, err := s.hash("form", formToken)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(p.State)
	if err != nil {
		return err
	}
	tag, err := s.db.Pool.Exec(ctx, `UPDATE hosted_pages SET step = $3, state = $4, updated_at = $5
		WHERE id = $1 AND form_hash = $2`, p.ID, h, p.Step, raw, s.now())
	if err != nil {
		return fmt.Errorf("hosted: save: %w", postgres.Translate(err))
	}
	if tag.RowsAffected() == 0 {
		return refused()
	}
	return nil
}

// SentAway says whether a page of purpose for object ever sent the
// browser to an OAuth provider (State.SentTo), expired, finished or not:
// the provider's callback for the object is then the page's, which the
// browser must prove with the page's form token, and never an app's.
func (s *Store) SentAway(ctx context.Context, purpose, objectID string) (bool, error) {
	var ok bool
	err := s.db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM hosted_pages
		WHERE object_id = $1 AND purpose = $2 AND opened_at IS NOT NULL AND state ? 'sent_to')`, objectID, purpose).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("hosted: sent away: %w", postgres.Translate(err))
	}
	return ok, nil
}

const pageColumns = `id, subject_id, purpose, object_id, step, state, expires_at`

func scanPage(row pgx.Row) (Page, error) {
	var p Page
	var raw []byte
	err := row.Scan(&p.ID, &p.SubjectID, &p.Purpose, &p.ObjectID, &p.Step, &raw, &p.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Page{}, refused()
	}
	if err != nil {
		return Page{}, fmt.Errorf("hosted: %w", postgres.Translate(err))
	}
	if err := json.Unmarshal(raw, &p.State); err != nil {
		return Page{}, fmt.Errorf("hosted: page state: %w", err)
	}
	return p, nil
}
