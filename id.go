package kluis

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
)

// Identifier prefixes, one per kind of object: an id says what it names
// (docs/ARCHITECTURE.md, the root package).
const (
	PrefixItem         = "itm_"
	PrefixAccount      = "acc_"
	PrefixLinkSession  = "lks_"
	PrefixVerification = "ver_"
	PrefixCredential   = "cred_"
	PrefixErasure      = "era_"
)

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewID returns prefix followed by 160 random bits in lower-case base32, so
// that identifiers cannot be guessed or enumerated.
func NewID(prefix string) string {
	var b [20]byte
	// crypto/rand.Read never returns an error on supported platforms (Go 1.24+).
	_, _ = rand.Read(b[:])
	return prefix + strings.ToLower(idEncoding.EncodeToString(b[:]))
}

// ValidID reports whether s looks like an identifier of the given prefix. It
// lets handlers answer 404 without a database round trip for garbage, and
// keeps odd bytes out of queries and logs.
func ValidID(prefix, s string) bool {
	if !strings.HasPrefix(s, prefix) {
		return false
	}
	rest := s[len(prefix):]
	if len(rest) != 32 {
		return false
	}
	for _, c := range rest {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}
