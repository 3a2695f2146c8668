package logging

import (
	"bytes"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
)

// Redacted replaces every masked value.
const Redacted = "[REDACTED]"

// sensitiveWords are the key fragments that mark a value as secret. Keys are
// compared lower-cased with '_', '-', '.' and spaces removed, so that
// account_number, accountNumber and Account-Number all match "accountnumber",
// and a key matches when it merely contains one of these.
var sensitiveWords = []string{
	"accountnumber", "accountno", "acctnum", "acctno", "routingnumber", "iban",
	"accesstoken", "publictoken", "linktoken", "refreshtoken", "token",
	"password", "passwd", "passphrase", "secret", "authorization", "cookie",
	"apikey", "privatekey", "datakey", "plaintext", "credential",
	// Micro-deposit amounts are the answer to a verification: "amount" also
	// catches a single amount.
	"amount",
	"ssn", "idnumber", "verificationcode", "authcode", "cvv", "cvc",
}

// sensitiveWordBytes holds sensitiveWords as byte slices, so that matching a
// normalized key converts nothing.
var sensitiveWordBytes = func() [][]byte {
	b := make([][]byte, len(sensitiveWords))
	for i, w := range sensitiveWords {
		b[i] = []byte(w)
	}
	return b
}()

// sensitiveExact are keys that are secret only as a whole word: "code" is the
// micro-deposit code, while "status_code" is not secret.
var sensitiveExact = []string{"code", "pin", "otp", "pan"}

// SensitiveKey reports whether an attribute with this key must have its
// value masked whatever the value is.
func SensitiveKey(key string) bool {
	if key == "" {
		return false
	}
	if v, ok := keyCache.Load(key); ok {
		return v.(bool)
	}
	sensitive := matchKey(key)
	// Keys are nearly always constants in the code, so a small cache holds
	// them all; keys that come from data (map keys) stop being cached once
	// it is full, so it cannot grow without bound.
	if keyCacheSize.Load() < maxCachedKeys {
		if _, loaded := keyCache.LoadOrStore(key, sensitive); !loaded {
			keyCacheSize.Add(1)
		}
	}
	return sensitive
}

const maxCachedKeys = 4096

var (
	keyCache     sync.Map // string → bool
	keyCacheSize atomic.Int64
)

func matchKey(key string) bool {
	var buf [64]byte
	k := normalizeKey(key, buf[:0])
	for _, w := range sensitiveExact {
		if string(k) == w {
			return true
		}
	}
	for _, w := range sensitiveWordBytes {
		if bytes.Contains(k, w) {
			return true
		}
	}
	return false
}

// normalizeKey lower-cases key (ASCII) and drops separators, appending to dst
// so that short keys do not allocate.
func normalizeKey(key string, dst []byte) []byte {
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'A' && c <= 'Z':
			dst = append(dst, c+('a'-'A'))
		case c == '_' || c == '-' || c == '.' || c == ' ':
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

var (
	// bearerRe matches an HTTP credential: the scheme stays readable, the
	// credential goes.
	// Bearer is matched in any case (as HTTP does); Basic only as written in
	// a header, so that prose such as "basic check" stays readable.
	bearerRe = regexp.MustCompile(`\b((?i:bearer)|Basic|BASIC)(\s+)[A-Za-z0-9\-._~+/]+=*`)
	// jwtRe matches a JWT (or JWE) and, more broadly, any base64url-encoded
	// JSON object: "eyJ" is `{"` encoded, and such blobs are tokens or
	// signed payloads far more often than anything worth reading in a log.
	jwtRe = regexp.MustCompile(`eyJ[A-Za-z0-9_\-+/=]*(?:\.[A-Za-z0-9_\-+/=]*)*`)
	// plaidTokenRe matches Plaid's access, public, link and processor tokens.
	plaidTokenRe = regexp.MustCompile(`\b(?:access|public|link|processor|payment)-(?:sandbox|development|production)-[0-9A-Za-z\-]+`)
)

// Scrub returns s with every value that looks like a secret or personal
// number replaced by [REDACTED]:
//
//   - any run of 6 or more digits (bank account numbers; this also covers
//     13-digit South African ID numbers and contiguous card numbers), except a
//     decimal fraction of at most 9 digits, so durations and timestamps such
//     as 1.234567s and 10:04:05.123456 stay readable;
//   - 13 to 19 digits separated by single spaces or dashes that pass the Luhn
//     check (card numbers);
//   - South African phone numbers, +27 (or 27, or 0027) and nine digits or 0
//     and nine digits, with or without spaces or dashes;
//   - bearer and basic credentials, JWT-shaped strings, Plaid tokens.
//
// A string with nothing to mask is returned as is, without allocating.
func Scrub(s string) string {
	digits, tokens := suspects(s)
	if !digits && !tokens {
		return s
	}
	if tokens {
		s = scrubTokens(s)
	}
	return scrubDigits(s)
}

// suspects is the cheap first pass: it reports whether s holds a group of 6
// or more digits (possibly split by separators), and whether it holds a
// marker of one of the token patterns. Most log strings hold neither, and
// skip the regular expressions entirely.
func suspects(s string) (digits, tokens bool) {
	n := 0 // digits in the current group
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			n++
			if n >= 6 {
				digits = true
			}
		case (c == ' ' || c == '-') && n > 0:
			// a separator keeps the group going
		default:
			n = 0
			switch c {
			case 'e':
				if strings.HasPrefix(s[i:], "eyJ") {
					tokens = true
				}
			case 'b', 'B':
				tokens = tokens || hasPrefixFold(s[i:], "bearer") || hasPrefixFold(s[i:], "basic")
			}
		}
	}
	if !tokens && strings.IndexByte(s, '-') >= 0 {
		tokens = strings.Contains(s, "-sandbox-") || strings.Contains(s, "-development-") || strings.Contains(s, "-production-")
	}
	return digits, tokens
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func scrubTokens(s string) string {
	s = bearerRe.ReplaceAllString(s, "${1}${2}"+Redacted)
	s = jwtRe.ReplaceAllLiteralString(s, Redacted)
	return plaidTokenRe.ReplaceAllLiteralString(s, Redacted)
}

// span is a half-open byte range of s.
type span struct{ start, end int }

// scrubDigits masks the digit patterns of Scrub. It splits s into groups of
// digit chunks joined by single separators ("4111 1111 1111 1111" is one
// group of four chunks), marks the chunks to mask, and rebuilds s.
func scrubDigits(s string) string {
	var masks []span
	var chunks []span
	for i := 0; i < len(s); {
		if !isDigit(s[i]) {
			i++
			continue
		}
		chunks = chunks[:0]
		i = readGroup(s, i, &chunks)
		masks = markGroup(s, chunks, masks)
	}
	if len(masks) == 0 {
		return s
	}
	return applyMasks(s, masks)
}

// readGroup collects the chunks of the group starting at s[i] and returns
// where the group ends.
func readGroup(s string, i int, chunks *[]span) int {
	for {
		start := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		*chunks = append(*chunks, span{start, i})
		if i+1 < len(s) && (s[i] == ' ' || s[i] == '-') && isDigit(s[i+1]) {
			i++
			continue
		}
		return i
	}
}

// markGroup appends to masks the range of the group to mask, if any. When
// any part of a group is a number to mask, the whole group goes: the rest of
// "850101 5009 087" is as much an ID number as its first six digits.
func markGroup(s string, chunks []span, masks []span) []span {
	start, found := chunks[0].start, false
	for _, c := range chunks {
		if n := c.end - c.start; n >= 6 && !(n <= 9 && isFraction(s, c.start)) {
			found = true
		}
	}
	for i := range chunks {
		d := 0
		for j := i; j < len(chunks); j++ {
			d += chunks[j].end - chunks[j].start
			if d > 19 {
				break
			}
			if m, ok := windowMask(s, chunks[i:j+1], d); ok {
				found = true
				start = min(start, m.start)
			}
		}
	}
	if !found {
		return masks
	}
	return append(masks, span{start, chunks[len(chunks)-1].end})
}

// windowMask decides whether the consecutive chunks w, holding d digits in
// all, are a phone or card number, and returns the range to mask.
func windowMask(s string, w []span, d int) (span, bool) {
	first, last := w[0], w[len(w)-1]
	m := span{first.start, last.end}
	switch {
	case d == 10 && s[first.start] == '0':
		return m, true // 0XX XXX XXXX
	case d == 11 && strings.HasPrefix(s[first.start:], "27"),
		d == 13 && strings.HasPrefix(s[first.start:], "0027"):
		if first.start > 0 && s[first.start-1] == '+' {
			m.start-- // +27 XX XXX XXXX, plus sign included
		}
		return m, true
	case d >= 13 && d <= 19 && (len(w) == 1 || luhn(s, w)):
		return m, true
	}
	return span{}, false
}

// isFraction reports whether the digit run at s[start] follows a decimal
// point that follows a short number, as in 1.250000s or 10:04:05.123456. A
// fraction after a long number is not spared: that number is masked, and
// the fraction may be part of what it hides.
func isFraction(s string, start int) bool {
	if start < 2 || s[start-1] != '.' {
		return false
	}
	n := 0
	for i := start - 2; i >= 0 && isDigit(s[i]); i-- {
		n++
	}
	return n >= 1 && n < 6
}

// luhn reports whether the digits of the chunks pass the Luhn check.
func luhn(s string, chunks []span) bool {
	sum, double := 0, false
	for k := len(chunks) - 1; k >= 0; k-- {
		for i := chunks[k].end - 1; i >= chunks[k].start; i-- {
			v := int(s[i] - '0')
			if double {
				v *= 2
				if v > 9 {
					v -= 9
				}
			}
			sum += v
			double = !double
		}
	}
	return sum%10 == 0
}

// applyMasks replaces the ranges of masks (in order, not overlapping) with
// Redacted. Ranges that touch are merged.
func applyMasks(s string, masks []span) string {
	var b strings.Builder
	b.Grow(len(s))
	pos := 0
	for k := 0; k < len(masks); {
		m := masks[k]
		for k++; k < len(masks) && masks[k].start <= m.end; k++ {
			m.end = max(m.end, masks[k].end)
		}
		b.WriteString(s[pos:m.start])
		b.WriteString(Redacted)
		pos = m.end
	}
	b.WriteString(s[pos:])
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
