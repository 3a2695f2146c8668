package api

import (
	"testing"
	"time"
)

func TestStalenessBounds(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tok := func(authAgo, life time.Duration) StaffToken {
		return StaffToken{ID: "staff_1", AuthTime: now.Add(-authAgo), IssuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(-time.Minute + life)}
	}
	cases := []struct {
		name  string
		tok   StaffToken
		stale bool
	}{
		{"MFA exactly 15 minutes ago, 90-minute token", tok(15*time.Minute, 90*time.Minute), false},
		{"MFA a second past 15 minutes", tok(15*time.Minute+time.Second, 5*time.Minute), true},
		{"a token a second longer than 90 minutes", tok(time.Minute, 90*time.Minute+time.Second), true},
		{"no auth_time", StaffToken{ID: "s", IssuedAt: now, ExpiresAt: now.Add(time.Minute)}, true},
		{"no iat", StaffToken{ID: "s", AuthTime: now, ExpiresAt: now.Add(time.Minute)}, true},
		{"auth_time 29 s ahead (clock skew)", tok(-29*time.Second, 5*time.Minute), false},
		{"auth_time a minute ahead", tok(-time.Minute, 5*time.Minute), true},
	}
	for _, tc := range cases {
		if got := staleness(tc.tok, now, DefaultStaffMFAMaxAge, DefaultStaffTokenMaxLifetime) != ""; got != tc.stale {
			t.Errorf("%s: stale = %v, want %v", tc.name, got, tc.stale)
		}
	}
}
