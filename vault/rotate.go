package vault

import (
	"context"
	"fmt"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// DefaultCryptoperiod is how long a subject key seals new records before the
// rotation job gives the subject a new key version (NIST SP 800-57 suggests
// up to two years for a symmetric data-encryption key; kluis takes one).
const DefaultCryptoperiod = 365 * 24 * time.Hour

// RotationOptions tune a rotation run. Zero values take the defaults.
type RotationOptions struct {
	// Cryptoperiod: subject keys older than this get a new version.
	Cryptoperiod time.Duration
	// Batch is how many keys one rewrap transaction takes.
	Batch int
	// Progress, if set, is told each step's running totals (job_runs counts).
	Progress func(rewrapped, resealedSubjects, resealedRecords int)
}

// RotationResult counts what a rotation run did.
type RotationResult struct {
	Rewrapped        int
	ResealedSubjects int
	ResealedRecords  int
}

// Rotate runs key rotation to the end: it rewraps every stored key under the
// root key's newest version, then gives each subject whose key is past its
// cryptoperiod a new key version and re-seals its records. Every step is its
// own transaction, so a run stopped at any point leaves keys and records
// either as they were or done, and the next run carries on; running it again
// when nothing is due changes nothing. Reveals keep working throughout: a
// record and its key change together in one transaction.
func (s *Store) Rotate(ctx context.Context, db *postgres.DB, opts RotationOptions) (RotationResult, error) {
	if opts.Cryptoperiod <= 0 {
		opts.Cryptoperiod = DefaultCryptoperiod
	}
	var res RotationResult
	report := func() {
		if opts.Progress != nil {
			opts.Progress(res.Rewrapped, res.ResealedSubjects, res.ResealedRecords)
		}
	}
	var cutoff time.Time
	if err := db.Pool.QueryRow(ctx, `SELECT now()`).Scan(&cutoff); err != nil {
		return res, fmt.Errorf("vault: rotate: %w", postgres.Translate(err))
	}
	for {
		n, err := s.ring.RewrapBatch(ctx, db, opts.Batch, cutoff)
		if err != nil {
			return res, fmt.Errorf("vault: rotate: %w", err)
		}
		if n == 0 {
			break
		}
		res.Rewrapped += n
		report()
	}
	for {
		due, err := SubjectsDueForReseal(ctx, db.Pool, opts.Cryptoperiod, 100)
		if err != nil {
			return res, err
		}
		if len(due) == 0 {
			return res, nil
		}
		for _, subject := range due {
			r, err := s.ResealSubject(ctx, db, subject)
			if kluis.ErrorCode(err) == kluis.ENotFound {
				continue // erased meanwhile: nothing left to re-seal
			}
			if err != nil {
				return res, fmt.Errorf("vault: rotate: %w", err)
			}
			res.ResealedSubjects++
			res.ResealedRecords += r.Records
			report()
		}
	}
}
