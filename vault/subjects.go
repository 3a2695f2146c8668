package vault

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// maxExternalIDLen matches the subjects.external_id check.
const maxExternalIDLen = 255

// EnsureSubject returns the internal id of the data subject whose user key
// (kluis.UserKey: their app and the `sub` of their token) is userKey,
// creating the subject in that app on first sight. Other tables refer to the internal id only, so that erasure removes
// the link to the person by deleting one row (DeleteSubject). Concurrent calls
// for one external id return the same id. Every caller is about to write for
// the subject, so a subject whose erasure runs is kluis.ESubjectErasing; once
// the erasure has completed the same external id is a new subject.
func EnsureSubject(ctx context.Context, q postgres.Querier, userKey string) (string, error) {
	app, externalID, err := splitUserKey(userKey)
	if err != nil {
		return "", err
	}
	var id string
	var erasing bool
	// Most calls find the subject: read first, so that they write nothing.
	err = q.QueryRow(ctx, `SELECT id, erasing_since IS NOT NULL FROM subjects WHERE app_id = $1 AND external_id = $2`,
		app, externalID).Scan(&id, &erasing)
	if err == nil {
		if erasing {
			return "", errSubjectErasing()
		}
		return id, nil
	}
	// The no-op update makes RETURNING give the existing row's id on a
	// conflict (another caller created it meanwhile); with DO NOTHING it
	// would return nothing.
	err = q.QueryRow(ctx, `
		INSERT INTO subjects (id, app_id, external_id) VALUES ($1, $2, $3)
		ON CONFLICT (app_id, external_id) DO UPDATE SET external_id = EXCLUDED.external_id
		RETURNING id`, kluis.NewID(PrefixSubject), app, externalID).Scan(&id)
	if err != nil {
		return "", fmt.Errorf("vault: ensure subject: %w", postgres.Translate(err))
	}
	return id, nil
}

// FenceSubject refuses, with kluis.ESubjectErasing, a write for the subject
// (internal id) once its erasure has been approved. In a transaction it
// takes the subject's row FOR SHARE until the transaction ends: the approval
// takes it FOR UPDATE, so a write checked here either commits before the
// approval (and the erasure run, which starts after it, sees the write) or
// waits for it and is refused. Every write path calls it inside its own
// transaction; the database's subject_write_fence trigger refuses inserts
// the same way, for paths that forget. An unknown subject is ENotFound.
func FenceSubject(ctx context.Context, q postgres.Querier, subjectID string) error {
	var erasing bool
	err := q.QueryRow(ctx, `SELECT erasing_since IS NOT NULL FROM subjects WHERE id = $1 FOR SHARE`, subjectID).Scan(&erasing)
	if err != nil {
		return fmt.Errorf("vault: subject fence: %w", postgres.Translate(err))
	}
	if erasing {
		return errSubjectErasing()
	}
	return nil
}

func errSubjectErasing() error {
	return kluis.Errorf(kluis.ESubjectErasing, "the subject's erasure is running; nothing new may be written for them")
}

// LookupSubject returns the internal id of the subject whose user key
// (kluis.UserKey) is userKey, or ENotFound. The same sub in another app is
// another subject: it is never found here.
func LookupSubject(ctx context.Context, q postgres.Querier, userKey string) (string, error) {
	app, externalID, err := splitUserKey(userKey)
	if err != nil {
		return "", kluis.Errorf(kluis.ENotFound, "not found")
	}
	var id string
	err = q.QueryRow(ctx, `SELECT id FROM subjects WHERE app_id = $1 AND external_id = $2`, app, externalID).Scan(&id)
	if err != nil {
		return "", fmt.Errorf("vault: lookup subject: %w", postgres.Translate(err))
	}
	return id, nil
}

// DeleteSubject deletes the subject's row, and with it the only link between
// the internal id and the person. Rows that still refer to the subject (its
// credentials, for one) make it fail with EInvalid: erasure deletes them
// first, after destroying the subject's keys.
func DeleteSubject(ctx context.Context, q postgres.Querier, subjectID string) error {
	tag, err := q.Exec(ctx, `DELETE FROM subjects WHERE id = $1`, subjectID)
	if err != nil {
		return fmt.Errorf("vault: delete subject: %w", postgres.Translate(err))
	}
	if tag.RowsAffected() == 0 {
		return kluis.Errorf(kluis.ENotFound, "not found")
	}
	return nil
}

// splitUserKey checks a user key and returns its app and external id.
func splitUserKey(userKey string) (app, externalID string, err error) {
	app, externalID = kluis.SplitUserKey(userKey)
	if !kluis.ValidAppID(app) || externalID == "" || len(externalID) > maxExternalIDLen {
		return "", "", kluis.Errorf(kluis.EInvalid, "invalid subject")
	}
	return app, externalID, nil
}

// SubjectKey returns the user key (kluis.UserKey) of the subject with the
// internal id subjectID: what audit entries take as the subject (and store
// only as its pseudonym). An unknown subject is ENotFound.
func SubjectKey(ctx context.Context, q postgres.Querier, subjectID string) (string, error) {
	var app, ext string
	err := q.QueryRow(ctx, `SELECT app_id, external_id FROM subjects WHERE id = $1`, subjectID).Scan(&app, &ext)
	if err != nil {
		return "", fmt.Errorf("vault: subject key: %w", postgres.Translate(err))
	}
	return kluis.UserKey(app, ext), nil
}

// SubjectApp returns the app the subject with the internal id subjectID
// belongs to. An unknown subject is ENotFound.
func SubjectApp(ctx context.Context, q postgres.Querier, subjectID string) (string, error) {
	var app string
	err := q.QueryRow(ctx, `SELECT app_id FROM subjects WHERE id = $1`, subjectID).Scan(&app)
	if err != nil {
		return "", fmt.Errorf("vault: subject app: %w", postgres.Translate(err))
	}
	return app, nil
}

// ExternalIDOf returns the user key (kluis.UserKey: the app and the `sub` of
// the user's tokens) of the subject with internal id subjectID: a hosted
// page knows its subject by internal id and acts for the user by their key. A subject
// that is gone, or whose erasure runs, is ENotFound or ESubjectErasing.
func ExternalIDOf(ctx context.Context, q postgres.Querier, subjectID string) (string, error) {
	var app, ext string
	var erasing bool
	err := q.QueryRow(ctx, `SELECT app_id, external_id, erasing_since IS NOT NULL FROM subjects WHERE id = $1`, subjectID).Scan(&app, &ext, &erasing)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", kluis.Errorf(kluis.ENotFound, "not found")
	}
	if err != nil {
		return "", fmt.Errorf("vault: subject: %w", postgres.Translate(err))
	}
	if erasing {
		return "", errSubjectErasing()
	}
	return kluis.UserKey(app, ext), nil
}
