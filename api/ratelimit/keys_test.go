package ratelimit_test

import (
	"testing"

	"github.com/kluis-dev/kluis/api/ratelimit"
)

func TestAddressKey(t *testing.T) {
	tests := []struct {
		ip   string
		bits int
		want string
	}{
		{"192.0.2.7", 64, "192.0.2.7"},
		{"::ffff:192.0.2.7", 64, "192.0.2.7"},
		{"2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"},
		{"2001:db8:1:2:3:4:5:6", 0, "2001:db8:1:2::/64"},
		{"fe80::1%eth0", 64, "fe80::/64"},
		{"not an address", 64, "not an address"},
	}
	for _, tt := range tests {
		if got := ratelimit.AddressKey(tt.ip, tt.bits); got != tt.want {
			t.Errorf("AddressKey(%q, %d) = %q, want %q", tt.ip, tt.bits, got, tt.want)
		}
	}
}

type pseudonyms map[string]string

func (p pseudonyms) Pseudonym(kind, value string) string { return p[kind+"|"+value] }

func TestIdentityKeyIsKeyedWhenItCanBe(t *testing.T) {
	p := pseudonyms{"ratelimit:address|192.0.2.7": "keyed"}
	if got := ratelimit.IdentityKey(p, "address", "192.0.2.7"); got != "keyed" {
		t.Fatalf("IdentityKey = %q, want the pseudonym", got)
	}
	plain := ratelimit.IdentityKey(nil, "address", "192.0.2.7")
	if plain == "" || plain == "192.0.2.7" || plain != ratelimit.IdentityKey(pseudonyms{}, "address", "192.0.2.7") {
		t.Fatalf("IdentityKey without a key = %q, want a stable hash", plain)
	}
	if plain == ratelimit.IdentityKey(nil, "user", "192.0.2.7") {
		t.Fatal("one identity under two limit names must not share a key")
	}
}
