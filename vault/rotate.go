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
	// Owners confirms the owner of each version-1 record before the re-seal
	// binds it (see ResealSubject); banklink.Service in kluis.
	Owners OwnerPointers
}

// RotationResult counts what a rotation run did.
type RotationResult struct {
	Rewrapped        int
	ResealedSubjects int
	ResealedRecords  int
	// ResealFailed counts subjects left as they were because one of their
	// records failed its integrity check (the run goes on with the others
	// and ends with an error naming the count; the next run retries them).
	ResealFailed int
}

// Rotate runs key rotation to the end: it rewraps every stored key under the
// root key's newest version, then gives each subject whose key is past its
// cryptoperiod, or that still holds version-1 records, a new key version and
// re-seals its records (as version 2). Every step is its own transaction, so
// a run stopped at any point leaves keys and records either as they were or
// done, and the next run carries on; running it again when nothing is due
// changes nothing. Subjects are taken in id order and never revisited within
// a run. Reveals keep working throughout: a record and its key change
// together in one transaction.
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
	var firstFailure error
	for after := ""; ; {
		due, err := SubjectsDueForReseal(ctx, db.Pool, opts.Cryptoperiod, after, 100)
		if err != nil {
			return res, err
		}
		if len(due) == 0 {
			break
		}
		for _, subject := range due {
			after = subject
			r, err := s.ResealSubject(ctx, db, subject, opts.Owners)
			switch kluis.ErrorCode(err) {
			case "":
				res.ResealedSubjects++
				res.ResealedRecords += r.Records
				report()
			case kluis.ENotFound:
				// erased meanwhile: nothing left to re-seal
			case EIntegrity:
				// One subject's bad record must not hold up everyone else's.
				res.ResealFailed++
				if firstFailure == nil {
					firstFailure = err
				}
			default:
				return res, fmt.Errorf("vault: rotate: %w", err)
			}
		}
	}
	if firstFailure != nil {
		return res, fmt.Errorf("vault: rotate: %d subjects not re-sealed (integrity); first: %w", res.ResealFailed, firstFailure)
	}
	return res, nil
}
