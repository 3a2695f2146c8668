package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/vault"
)

// A user's requests move their last_seen_at (the dormant-subject retention
// reads it), at most once an hour, and never for someone kluis holds
// nothing on.
func TestAUsersRequestRecordsThatTheyWereSeen(t *testing.T) {
	be := startBank(t, false)
	ctx := context.Background()
	sid, err := vault.EnsureSubject(ctx, be.DB.Pool, "user_seen")
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-400 * 24 * time.Hour)
	if _, err := be.DB.Pool.Exec(ctx, `UPDATE subjects SET last_seen_at = $2 WHERE id = $1`, sid, old); err != nil {
		t.Fatal(err)
	}
	seen := func() time.Time {
		var at time.Time
		if err := be.DB.Pool.QueryRow(ctx, `SELECT last_seen_at FROM subjects WHERE id = $1`, sid).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	tok := userToken(t, "user_seen")
	if status, _, body := be.call(t, "GET", "/v1/items", tok, ""); status != 200 {
		t.Fatalf("list = %d %s", status, body)
	}
	first := seen()
	if time.Since(first) > time.Minute {
		t.Fatalf("last_seen_at = %v after a request, want now", first)
	}
	if status, _, _ := be.call(t, "GET", "/v1/items", tok, ""); status != 200 {
		t.Fatal(status)
	}
	if again := seen(); !again.Equal(first) {
		t.Errorf("a second request within the hour wrote last_seen_at again (%v → %v)", first, again)
	}
	var n int
	other := userToken(t, "user_never_linked")
	be.call(t, "GET", "/v1/items", other, "")
	if err := be.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM subjects WHERE external_id = 'user_never_linked'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("a request created a subject row (%d, %v)", n, err)
	}
}
