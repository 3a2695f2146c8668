package kluis

import "testing"

func TestUserKeyRoundTrips(t *testing.T) {
	for _, tc := range []struct{ name, app, sub, key string }{
		{"the default app keeps the bare sub", DefaultApp, "alice", "alice"},
		{"another app prefixes its id", "merchant", "alice", "merchant\x1falice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := UserKey(tc.app, tc.sub); got != tc.key {
				t.Fatalf("UserKey = %q, want %q", got, tc.key)
			}
			app, sub := SplitUserKey(tc.key)
			if app != tc.app || sub != tc.sub {
				t.Fatalf("SplitUserKey = %q, %q", app, sub)
			}
		})
	}
}

func TestValidAppID(t *testing.T) {
	for id, want := range map[string]bool{
		"default": true, "merchant-app": true, "a": true, "": false, "Consumer": false, "1app": false, "a b": false,
		"x\x1fy": false,
	} {
		if got := ValidAppID(id); got != want {
			t.Errorf("ValidAppID(%q) = %v, want %v", id, got, want)
		}
	}
}
