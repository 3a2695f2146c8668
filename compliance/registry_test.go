package compliance_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/audit/audittest"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// Every class's name is a setting, a metric and an audit target: two
// features registering one name is refused, and kluis's own list has none
// twice.
func TestTwoRetentionClassesMayNotShareAName(t *testing.T) {
	c := compliance.RetentionClass{Name: "widgets", Table: "widgets", Where: "true", Default: time.Hour, Min: time.Hour}
	if _, err := compliance.NewRegistry(c, c); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("a name registered twice = %v, want refused", err)
	}
	audit := c
	audit.Name = compliance.AuditClass
	if _, err := compliance.NewRegistry(audit); err == nil {
		t.Error("a feature's class named as the audit class was accepted")
	}
	reg, err := compliance.NewRegistry(config.RetentionClasses()...)
	if err != nil {
		t.Fatalf("kluis's own classes: %v", err)
	}
	seen := map[string]bool{}
	for _, cl := range reg.Classes() {
		if seen[cl.Name] {
			t.Errorf("%s is registered twice", cl.Name)
		}
		seen[cl.Name] = true
	}
	if cls := reg.Classes(); cls[len(cls)-1].Name != compliance.AuditClass {
		t.Errorf("the audit class is not last: %s", cls[len(cls)-1].Name)
	}
}

// A class without what the purge needs is refused when it is registered,
// not when the purge runs.
func TestAnIncompleteRetentionClassIsRefused(t *testing.T) {
	for _, c := range []compliance.RetentionClass{
		{Table: "widgets", Where: "true", Default: time.Hour, Min: time.Hour},
		{Name: "widgets", Where: "true", Default: time.Hour, Min: time.Hour},
		{Name: "widgets", Table: "widgets", Default: time.Hour, Min: time.Hour},
		{Name: "widgets", Table: "widgets", Where: "true", Default: time.Minute, Min: time.Hour},
	} {
		if _, err := compliance.NewRegistry(c); err == nil {
			t.Errorf("%+v was accepted", c)
		}
	}
}

// The features' classes name their own tables only: a row another
// feature's row still refers to (a credential's tombstone an item names, an
// account a verification names) is kept by the foreign keys the purge finds
// in the catalog, however old, and goes once nothing refers to it.
func TestRowsAnotherFeatureStillRefersToAreKeptByTheCatalog(t *testing.T) {
	db, _ := pgtest.Open(t)
	ctx := context.Background()
	now := time.Now().UTC()
	old := now.Add(-400 * 24 * time.Hour)
	sid := newSubject(t, db, "user-referred")
	ref := tombstone(t, db, sid, old)
	item := kluis.NewID(kluis.PrefixItem)
	exec(t, db, `INSERT INTO items (id, subject_id, provider, provider_item_id, institution_id, institution_name, status, credential_ref)
		VALUES ($1, $2, 'sandbox', $3, 'ins_sandbox', 'Sandbox Bank', 'active', $4)`, item, sid, kluis.NewID("pi_"), ref)
	acc := kluis.NewID(kluis.PrefixAccount)
	exec(t, db, `INSERT INTO accounts (id, subject_id, name, mask, status, revoked_at) VALUES ($1, $2, 'cheque', '1234', 'revoked', $3)`, acc, sid, old)
	ver := kluis.NewID(kluis.PrefixVerification)
	exec(t, db, `INSERT INTO verifications (id, subject_id, account_id, requested_method, method, status, attempts_remaining,
		expires_at, created_at, updated_at, app_id) VALUES ($1, $2, $3, 'instant', 'instant', 'pending', 3, $4, $4, $4, 'default')`, ver, sid, acc, now)
	purger := compliance.NewPurger(db, audit.NewAuditor(db, audittest.Pseudonyms{}, nil), fixedClock{now}, nil, classes)
	if _, err := purger.Purge(ctx, compliance.PurgeOptions{}); err != nil {
		t.Fatal(err)
	}
	if count(t, db, `SELECT count(*) FROM credentials WHERE ref = $1`, ref) != 1 {
		t.Error("a tombstone an item still names was purged")
	}
	if count(t, db, `SELECT count(*) FROM accounts WHERE id = $1`, acc) != 1 {
		t.Error("an account a verification still names was purged")
	}
	exec(t, db, `DELETE FROM items WHERE id = $1`, item)
	exec(t, db, `DELETE FROM verifications WHERE id = $1`, ver)
	if _, err := purger.Purge(ctx, compliance.PurgeOptions{}); err != nil {
		t.Fatal(err)
	}
	if count(t, db, `SELECT count(*) FROM credentials WHERE ref = $1`, ref) != 0 {
		t.Error("a tombstone nothing names any more was kept")
	}
	if count(t, db, `SELECT count(*) FROM accounts WHERE id = $1`, acc) != 0 {
		t.Error("an account nothing names any more was kept")
	}
}
