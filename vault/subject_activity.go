package vault

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kluis-dev/kluis/postgres"
)

// SeenEvery is how stale a subject's last_seen_at may be before TouchSubject
// writes it again: dormancy is measured in months, so an hour's precision
// costs no write per request.
const SeenEvery = time.Hour

// TouchSubject records that the user whose user key (kluis.UserKey) is
// userKey called kluis now, for the retention of dormant subjects. It
// writes at most once per SeenEvery per subject, never for a subject being
// erased, and does nothing for one kluis holds nothing on yet.
func TouchSubject(ctx context.Context, q postgres.Querier, userKey string) error {
	app, externalID, err := splitUserKey(userKey)
	if err != nil {
		return nil
	}
	_, err = q.Exec(ctx, `
		UPDATE subjects SET last_seen_at = now()
		WHERE app_id = $1 AND external_id = $2 AND erasing_since IS NULL AND last_seen_at < now() - make_interval(secs => $3)`,
		app, externalID, SeenEvery.Seconds())
	if err != nil {
		return fmt.Errorf("vault: touch subject: %w", postgres.Translate(err))
	}
	return nil
}

// maxSeen bounds the memory of a Seen throttle; past it, the throttle
// forgets everything and starts again (the database still keeps writes to
// at most one per SeenEvery).
const maxSeen = 100_000

// Seen saves most users' requests the round trip of TouchSubject: it
// remembers, in this process, whom it touched within SeenEvery. Safe for
// concurrent use; the zero value is ready.
type Seen struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// Touch calls TouchSubject unless this process did so for externalID within
// SeenEvery.
func (s *Seen) Touch(ctx context.Context, q postgres.Querier, externalID string, now time.Time) error {
	s.mu.Lock()
	if t, ok := s.last[externalID]; ok && now.Sub(t) < SeenEvery {
		s.mu.Unlock()
		return nil
	}
	if s.last == nil || len(s.last) >= maxSeen {
		s.last = make(map[string]time.Time)
	}
	s.last[externalID] = now
	s.mu.Unlock()
	if err := TouchSubject(ctx, q, externalID); err != nil {
		s.mu.Lock()
		delete(s.last, externalID) // try again on the next request
		s.mu.Unlock()
		return err
	}
	return nil
}
