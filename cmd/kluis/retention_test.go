package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
)

// `kluis jobs run retention-purge --dry-run` prints every class with its
// period and what would go, dormant subjects included, and deletes nothing.
func TestTheRetentionDryRunPrintsPerClassWhatWouldGo(t *testing.T) {
	db, u := pgtest.Open(t)
	ctx := context.Background()
	sid, err := vault.EnsureSubject(ctx, db.Pool, "user-long-gone")
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-400 * 24 * time.Hour)
	if _, err := db.Pool.Exec(ctx, `UPDATE subjects SET created_at = $2, last_seen_at = $2 WHERE id = $1`, sid, old); err != nil {
		t.Fatal(err)
	}
	env := serveEnv(t, u)
	env["KLUIS_RETENTION_DORMANT_SUBJECTS"] = "365d"
	code, out, errOut := runKluis(t, env, "jobs", "run", "retention-purge", "--dry-run")
	if code != 0 {
		t.Fatalf("dry run = %d %q %q", code, out, errOut)
	}
	for _, want := range []string{"CLASS", "link_sessions", "revoked_items", "revoked_credentials", "audit_entries", "idempotency_keys         1d ", "dormant_subjects         365d      1 (0 kept under a legal hold, 0 seen again)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM subjects WHERE id = $1`, sid).Scan(&n); err != nil || n != 1 {
		t.Errorf("the dry run erased the subject (%d, %v)", n, err)
	}
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM erasure_requests`).Scan(&n); err != nil || n != 0 {
		t.Errorf("the dry run opened %d erasures (%v)", n, err)
	}
	if code, _, _ := runKluis(t, env, "jobs", "run", "audit-head", "--dry-run"); code != 2 {
		t.Errorf("--dry-run on another job = %d, want a usage error", code)
	}
}

// `kluis console` names every missing setting at once and exits 1.
func TestTheConsoleNamesEveryMissingSetting(t *testing.T) {
	code, _, errOut := runKluis(t, map[string]string{"KLUIS_CONSOLE_API_URL": "http://kluis:8443"}, "console")
	if code != 1 {
		t.Fatalf("console without settings = %d, want 1", code)
	}
	for _, want := range []string{"KLUIS_CONSOLE_PUBLIC_URL", "KLUIS_CONSOLE_TLS_CERT", "KLUIS_CONSOLE_OIDC_ISSUER",
		"KLUIS_CONSOLE_OIDC_CLIENT_ID", "KLUIS_CONSOLE_CLIENT_CERT", "KLUIS_CONSOLE_API_CA", "KLUIS_CONSOLE_API_URL: must be"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("the error does not name %s:\n%s", want, errOut)
		}
	}
}

// The retention job erases a dormant subject and keeps one under a hold.
func TestTheRetentionJobErasesADormantSubjectAndKeepsAHeldOne(t *testing.T) {
	db, u := pgtest.Open(t)
	ctx := context.Background()
	old := time.Now().Add(-400 * 24 * time.Hour)
	ids := map[string]string{}
	for _, sub := range []string{"user-dormant", "user-held-dormant"} {
		id, err := vault.EnsureSubject(ctx, db.Pool, sub)
		if err != nil {
			t.Fatal(err)
		}
		ids[sub] = id
		if _, err := db.Pool.Exec(ctx, `UPDATE subjects SET created_at = $2, last_seen_at = $2 WHERE id = $1`, id, old); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO legal_holds (id, held_subject_id, subject_pseudonym, reason, created_by, created_at)
		VALUES ('hold_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', $1, 'p', 'CASE-1', 'staff_a', now())`, ids["user-held-dormant"]); err != nil {
		t.Fatal(err)
	}
	env := serveEnv(t, u)
	env["KLUIS_RETENTION_DORMANT_SUBJECTS"] = "365d"
	if code, out, errOut := runKluis(t, env, "jobs", "run", "retention-purge"); code != 0 ||
		!strings.Contains(out, "purged_dormant_subjects=1") || !strings.Contains(out, "dormant_held=1") {
		t.Fatalf("retention-purge = %d %q %q", code, out, errOut)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM subjects WHERE id = $1`, ids["user-dormant"]).Scan(&n); err != nil || n != 0 {
		t.Errorf("the dormant subject is still there (%d, %v)", n, err)
	}
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM subjects WHERE id = $1`, ids["user-held-dormant"]).Scan(&n); err != nil || n != 1 {
		t.Errorf("the held subject was erased (%d, %v)", n, err)
	}
}
