package ratelimit

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
)

// DefaultIPv6Prefix is the IPv6 prefix length an address limit counts by:
// one subscriber commonly holds a whole /64 (or more) and may send from
// any address in it, so counting per /128 would give one client 2^64
// budgets.
const DefaultIPv6Prefix = 64

// AddressKey is what an address limit counts a client address under: an
// IPv4 address itself (IPv4-mapped IPv6 addresses are IPv4), an IPv6
// address's /bits prefix (zone dropped; bits out of range is
// DefaultIPv6Prefix), and anything unparsable as it is.
func AddressKey(ip string, bits int) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is4() {
		return addr.String()
	}
	if bits <= 0 || bits > 128 {
		bits = DefaultIPv6Prefix
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return addr.String()
	}
	return p.String()
}

// Pseudonymizer gives keyed pseudonyms (vault.SystemKeys.Pseudonym); ""
// when its key is not loaded.
type Pseudonymizer interface {
	Pseudonym(kind, value string) string
}

// IdentityKey pseudonymizes an identity (an address, a subject) counted
// under the limit name for the limiter's store: keyed when p is set
// (addresses are too few to hide behind a plain hash), and the same on
// every instance that shares the system keys; a truncated SHA-256 without.
func IdentityKey(p Pseudonymizer, name, identity string) string {
	if p != nil {
		if ps := p.Pseudonym("ratelimit:"+name, identity); ps != "" {
			return ps
		}
	}
	sum := sha256.Sum256([]byte("kluis/ratelimit/v1\x00" + name + "\x00" + identity))
	return hex.EncodeToString(sum[:16])
}
