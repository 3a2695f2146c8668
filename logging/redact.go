package logging

import (
	"bytes"
	"cmp"
	"regexp"
	"slices"
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
	"ssn", "idnumber", "passport", "verificationcode", "authcode", "cvv", "cvc",
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
	// credential (group 2) goes. Bearer is matched in any case (as HTTP
	// does); Basic only as written in a header, so that prose such as "basic
	// check" stays readable. Nothing is asked of what comes before the
	// scheme: a rule that wanted a word boundary there would see one appear
	// once a neighbour had been masked ("00000000Bearer x" becomes
	// "[REDACTED]Bearer x"), and a second pass would find what the first let
	// through.
	bearerRe = regexp.MustCompile(`((?i:bearer)|Basic|BASIC)(\s+)([A-Za-z0-9\-._~+/]+=*)`)
	// jwtRe matches a JWT (or JWE) and, more broadly, any base64url-encoded
	// JSON object: "eyJ" is `{"` encoded, and such blobs are tokens or
	// signed payloads far more often than anything worth reading in a log.
	jwtRe = regexp.MustCompile(`eyJ[A-Za-z0-9_\-+/=]*(?:\.[A-Za-z0-9_\-+/=]*)*`)
	// plaidTokenRe matches Plaid's access, public, link and processor tokens,
	// again whatever precedes them.
	plaidTokenRe = regexp.MustCompile(`(?:access|public|link|processor|payment)-(?:sandbox|development|production)-[0-9A-Za-z\-]+`)
	// zaPhoneRe matches the South African phone numbers the digit rules
	// cannot see because their separators break a group: brackets around
	// the area code or the country code, the "(0)" trunk prefix written
	// after +27, dots, and double spaces: "+27 (0)82 555 1234",
	// "(082) 555 1234", "(+27) 82 555 1234", "082.555.1234",
	// "+27  82 555 1234". An optional country code (+27, 0027 or 27) or
	// the trunk 0, a two-digit area code, then seven digits, with up to two
	// spaces, dots or dashes between any two of them.
	zaPhoneRe = regexp.MustCompile(`(?:\(?(?:\+|00)?27\)?[ .\-]{0,2}(?:\(0\)[ .\-]{0,2})?\(?|\(?0)[1-9][ .\-]{0,2}[0-9]\)?(?:[ .\-]{0,2}[0-9]){7}`)
)

// Scrub returns s with every value that looks like a secret or personal
// number replaced by [REDACTED]:
//
//   - any run of 6 or more digits (bank account numbers; this also covers
//     13-digit South African ID numbers and contiguous card numbers), except a
//     decimal fraction of at most 9 digits after a short number that is
//     itself left readable, so durations and timestamps such as 1.234567s
//     and 10:04:05.123456 stay readable;
//   - 13 to 19 digits separated by single spaces or dashes that pass the Luhn
//     check (card numbers);
//   - South African phone numbers, +27 (or 27, or 0027) and nine digits or 0
//     and nine digits, with or without spaces or dashes, and (zaPhoneRe)
//     with brackets, a "(0)" after the country code, dots or double spaces;
//   - bearer and basic credentials, JWT-shaped strings, Plaid tokens.
//
// Every rule looks at the original s, never at another rule's output: the
// ranges all rules find are merged and masked in one pass, so a secret that
// two rules see in part is masked whole whichever reaches it first. Scrub is
// idempotent (Scrub(Scrub(s)) == Scrub(s)): no rule depends on a neighbour
// that masking could change, except the fraction rule, which spares a
// fraction only when the number before it stays readable; and no rule
// matches any part of [REDACTED].
//
// A string with nothing to mask is returned as is, without allocating.
func Scrub(s string) string {
	masks := secretSpans(s)
	if len(masks) == 0 {
		return s
	}
	return applyMasks(s, masks)
}

// secretSpans returns the ranges of s to mask, sorted and merged (ranges that
// overlap or touch become one).
func secretSpans(s string) []span {
	digits, tokens, phone := suspects(s)
	if !digits && !tokens && !phone {
		return nil
	}
	var masks []span
	if tokens {
		masks = tokenSpans(s, nil)
	}
	if phone {
		// With the tokens, so that the fraction rule sees a number masked
		// here as masked.
		masks = phoneSpans(s, masks)
	}
	masks = mergeSpans(masks)
	if digits {
		masks = mergeSpans(append(digitSpans(s, masks), masks...))
	}
	return masks
}

// suspects is the cheap first pass: it reports whether s holds a group of 6
// or more digits (possibly split by separators), whether it holds a
// marker of one of the token patterns, and whether it holds 9 or more
// digits split only by the separators a written phone number uses. Most log
// strings hold none of these, and skip the regular expressions entirely.
func suspects(s string) (digits, tokens, phone bool) {
	n := 0 // digits in the current group
	p := 0 // digits in the current phone-shaped group
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			n++
			p++
			if n >= 6 {
				digits = true
			}
			if p >= 9 {
				phone = true
			}
			continue
		case c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' || c == '+':
			// a phone separator keeps the phone group going
		default:
			p = 0
		}
		switch {
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
	return digits, tokens, phone
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// tokenSpans appends the ranges of credentials, JWTs and Plaid tokens.
func tokenSpans(s string, masks []span) []span {
	// Schemes are searched for at every position, overlapping matches
	// included: in "Bearer xbearer abc" the first credential ("xbearer")
	// hides a second scheme whose credential ("abc") must go too.
	for pos := 0; pos < len(s); {
		m := bearerRe.FindStringSubmatchIndex(s[pos:])
		if m == nil {
			break
		}
		masks = append(masks, span{pos + m[6], pos + m[7]})
		pos += m[0] + 1
	}
	// A JWT or Plaid token found inside another one ends where it does (one
	// character class runs to the end), so non-overlapping matches suffice.
	for _, m := range jwtRe.FindAllStringIndex(s, -1) {
		masks = append(masks, span{m[0], m[1]})
	}
	for _, m := range plaidTokenRe.FindAllStringIndex(s, -1) {
		masks = append(masks, span{m[0], m[1]})
	}
	return masks
}

// phoneSpans appends the ranges of South African phone numbers that
// zaPhoneRe finds.
func phoneSpans(s string, masks []span) []span {
	for _, m := range zaPhoneRe.FindAllStringIndex(s, -1) {
		masks = append(masks, span{m[0], m[1]})
	}
	return masks
}

// span is a half-open byte range of s.
type span struct{ start, end int }

// mergeSpans sorts masks and merges the ranges that overlap or touch.
func mergeSpans(masks []span) []span {
	if len(masks) < 2 {
		return masks
	}
	slices.SortFunc(masks, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	out := masks[:1]
	for _, m := range masks[1:] {
		last := &out[len(out)-1]
		if m.start <= last.end {
			last.end = max(last.end, m.end)
			continue
		}
		out = append(out, m)
	}
	return out
}

// covered reports whether byte i of s lies in one of masks (sorted, merged).
func covered(masks []span, i int) bool {
	k, _ := slices.BinarySearchFunc(masks, i, func(m span, i int) int {
		if m.end <= i {
			return -1
		}
		if m.start > i {
			return 1
		}
		return 0
	})
	return k < len(masks) && masks[k].start <= i && i < masks[k].end
}

// digitSpans returns the ranges of the digit patterns of Scrub, in order;
// tokens are the token ranges (sorted, merged). It splits s into groups of
// digit chunks joined by single separators ("4111 1111 1111 1111" is one
// group of four chunks) and marks the groups to mask.
func digitSpans(s string, tokens []span) []span {
	var masks []span
	var chunks []span
	for i := 0; i < len(s); {
		if !isDigit(s[i]) {
			i++
			continue
		}
		chunks = chunks[:0]
		i = readGroup(s, i, &chunks)
		masks = markGroup(s, chunks, masks, tokens)
	}
	return masks
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
func markGroup(s string, chunks []span, masks, tokens []span) []span {
	start, found := chunks[0].start, false
	for _, c := range chunks {
		if n := c.end - c.start; n >= 6 && !(n <= 9 && isFraction(s, c.start, masks, tokens)) {
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
// point that follows a short number left readable, as in 1.250000s or
// 10:04:05.123456. A fraction after a long number is not spared: that number
// is masked, and the fraction may be part of what it hides. Nor is one after
// a number that another rule masks: "[REDACTED].250000" no longer shows that
// it is a fraction, and a second pass would mask it.
//
// masks are the digit ranges found so far, in order: the group before this
// one, if it was masked, is the last of them; tokens are the token ranges.
func isFraction(s string, start int, masks, tokens []span) bool {
	if start < 2 || s[start-1] != '.' {
		return false
	}
	n := 0
	for i := start - 2; i >= 0 && isDigit(s[i]); i-- {
		n++
	}
	if n < 1 || n >= 6 {
		return false
	}
	intPart := start - 2 // the last digit before the point
	if len(masks) > 0 && masks[len(masks)-1].end > intPart {
		return false
	}
	return !covered(tokens, intPart)
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

// applyMasks replaces the ranges of masks (sorted, merged) with Redacted.
func applyMasks(s string, masks []span) string {
	var b strings.Builder
	b.Grow(len(s))
	pos := 0
	for _, m := range masks {
		b.WriteString(s[pos:m.start])
		b.WriteString(Redacted)
		pos = m.end
	}
	b.WriteString(s[pos:])
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
