package logging

import (
	"bytes"
	"errors"
	"log/slog"
	"regexp"
	"testing"
)

func TestScrub(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
	}{
		{"plain text passes unchanged", "GET /v1/items/itm_x 200", "GET /v1/items/itm_x 200"},
		{"a short number stays", "retry 3 of 5 after 250ms", "retry 3 of 5 after 250ms"},
		{"a date stays", "on 2024-01-02 at 10:04:05", "on 2024-01-02 at 10:04:05"},
		{"a fraction of a second stays", "took 1.234567s at 10:04:05.123456", "took 1.234567s at 10:04:05.123456"},
		{"a bank account number is masked", "account 62001234567 linked", "account [REDACTED] linked"},
		{"six digits are masked", "branch 250655", "branch [REDACTED]"},
		{"a South African ID number is masked", "id=8001015009087", "id=[REDACTED]"},
		{"an ID number written in parts is masked whole", "ID 800101 5009 087", "ID [REDACTED]"},
		{"a +27 phone number with spaces is masked", "call +27 82 555 1234 now", "call [REDACTED] now"},
		{"a +27 phone number with dashes is masked", "call +27-82-555-1234", "call [REDACTED]"},
		{"a 27 phone number without the plus is masked", "from 27 82 555 1234", "from [REDACTED]"},
		{"a 0027 phone number is masked", "from 0027 82 555 1234", "from [REDACTED]"},
		{"a Luhn-valid ID number in groups of four is masked", "8001 0150 0908 7", "[REDACTED]"},
		{"an ID number with dashes is masked whole", "id 930615-5123-088 given", "id [REDACTED] given"},
		{"an ID number in JSON is masked", `{"holder_id_number":"9306155123088"}`, `{"holder_id_number":"[REDACTED]"}`},
		{"a +27 number with the trunk 0 in brackets is masked", "call +27 (0)82 555 1234 now", "call [REDACTED] now"},
		{"a +27 number with a spaced trunk 0 is masked", "call +27 (0) 82 555 1234", "call [REDACTED]"},
		{"a bracketed country code is masked", "call (+27) 82 555 1234", "call [REDACTED]"},
		{"a bracketed area code after +27 is masked", "call +27 (82) 555 1234", "call [REDACTED]"},
		{"a bracketed local area code is masked", "call (082) 555 1234.", "call [REDACTED]."},
		{"a +27 number written with dots is masked", "call +27.82.555.1234", "call [REDACTED]"},
		{"a local number written with dots is masked", "call 082.555.1234", "call [REDACTED]"},
		{"a +27 number with a double space is masked", "call +27  82 555 1234", "call [REDACTED]"},
		{"a +27 number with the trunk 0 and no spaces is masked whole", "+27(0)825551234", "[REDACTED]"},
		{"a +27 number in groups of two is masked", "+27 82 555 12 34", "[REDACTED]"},
		{"a version with dots stays", "kluis 1.26.8 on go1.26", "kluis 1.26.8 on go1.26"},
		{"an address with dots stays", "peer 127.0.0.1:8080", "peer 127.0.0.1:8080"},
		{"the word basic in prose stays", "basic check failed", "basic check failed"},
		{"a lower-case bearer credential is masked", "authorization: bearer abcdefgh", "authorization: bearer [REDACTED]"},
		{"a local phone number with spaces is masked", "call 082 555 1234.", "call [REDACTED]."},
		{"a local phone number with dashes is masked", "call 082-555-1234", "call [REDACTED]"},
		{"a contiguous local phone number is masked", "call 0825551234", "call [REDACTED]"},
		{"a card number with spaces is masked", "card 4111 1111 1111 1111 declined", "card [REDACTED] declined"},
		{"a card number with dashes is masked", "card 5500-0000-0000-0004", "card [REDACTED]"},
		{"two card numbers in a row are both masked", "4111 1111 1111 1111 5500 0000 0000 0004", "[REDACTED]"},
		{"a contiguous card number failing Luhn is masked", "pan 4111111111111112", "pan [REDACTED]"},
		{"a bearer token is masked", "Authorization: Bearer abc.DEF-ghi_jkl~=", "Authorization: Bearer [REDACTED]"},
		{"a basic credential is masked", "Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [REDACTED]"},
		{"a JWT is masked", "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2ln-bmF0_dXJl end", "token [REDACTED] end"},
		{"a Plaid access token is masked", "exchanged access-sandbox-8ab976e6-64bc-4b38-98f7-731e7a349970", "exchanged [REDACTED]"},
		{"digits inside a word are masked", "acct62001234567x", "acct[REDACTED]x"},
		{"a long fraction is masked", "0.1234567890123", "0.[REDACTED]"},
		{"a bearer credential after digits is masked whole", "00000000BeArer 00000A0000000000000", "[REDACTED]BeArer [REDACTED]"},
		{"a bearer credential after a letter is masked", "xBearer abc", "xBearer [REDACTED]"},
		{"a scheme hidden in a credential hides another credential", "Bearer xbearer abc", "Bearer [REDACTED] [REDACTED]"},
		{"a Plaid token after digits is masked", "123456access-sandbox-abc", "[REDACTED]"},
		{"a fraction after a masked token is masked", "access-sandbox-12.1234567", "[REDACTED].[REDACTED]"},
		{"a fraction after a masked group is masked", "123456 12345.1234567", "[REDACTED].[REDACTED]"},
		{"a fraction beside a credential stays", "took 1.234567s Bearer abc", "took 1.234567s Bearer [REDACTED]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Scrub(tt.in); got != tt.want {
				t.Errorf("Scrub(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestScrubDoesNotAllocateForCleanStrings(t *testing.T) {
	s := "request finished: GET /v1/items/itm_abc status 200 in 12ms"
	if n := testing.AllocsPerRun(100, func() { _ = Scrub(s) }); n != 0 {
		t.Errorf("Scrub allocated %v times for a clean string, want 0", n)
	}
}

func TestSensitiveKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key  string
		want bool
	}{
		{"account_number", true},
		{"accountNumber", true},
		{"Account-Number", true},
		{"routing_number", true},
		{"access_token", true},
		{"public_token", true},
		{"link_token", true},
		{"refresh_token", true},
		{"token", true},
		{"password", true},
		{"db_passwd", true},
		{"client_secret", true},
		{"Authorization", true},
		{"Set-Cookie", true},
		{"x_api_key", true},
		{"private_key", true},
		{"amounts", true},
		{"code", true},
		{"Code", true},
		{"ssn", true},
		{"id_number", true},
		{"holder_passport_number", true},
		{"passportNumber", true},
		{"passport_country", true},
		{"status_code", false},
		{"request_id", false},
		{"status", false},
		{"path", false},
		{"duration", false},
		{"item_id", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := SensitiveKey(tt.key); got != tt.want {
			t.Errorf("SensitiveKey(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
}

// secretShaped are checks of the fuzz target that owe nothing to Scrub's
// code: none of these may survive in its output.
var secretShaped = []struct {
	what string
	re   *regexp.Regexp
}{
	{"a run of 10 digits (only fractions of at most 9 are spared)", regexp.MustCompile(`[0-9]{10}`)},
	{"a bearer or basic credential", regexp.MustCompile(`((?i:bearer)|Basic|BASIC)\s+[A-Za-z0-9\-._~+/]`)},
	{"a JWT", regexp.MustCompile(`eyJ`)},
	{"a Plaid token", regexp.MustCompile(`(?:access|public|link|processor|payment)-(?:sandbox|development|production)-[0-9A-Za-z\-]`)},
}

var thirteenDigits = regexp.MustCompile(`[0-9]{13}`)

// FuzzRedact checks, for any input, that Scrub is idempotent, that its
// output holds nothing any rule would still mask, and that nothing
// secret-shaped survives it, alone or through the log handler. Its committed
// corpus (testdata/fuzz/FuzzRedact) runs with every `go test`; `make fuzz`
// looks for new inputs, which are committed there once fixed.
func FuzzRedact(f *testing.F) {
	for _, s := range []string{
		"8001015009087", "+27 82 555 1234", "4111 1111 1111 1111", "12:00:00.1234567890123",
		"Bearer eyJ.a.b", "0.123456789", "1-2-3-4-5-6-7-8-9-0-1-2-3", "+27+27 0",
		"[REDACTED].1234567", "Bearer [REDACTED]", "1.[REDACTED]123456",
		"+27 (0)82 555 1234", "(082) 555 1234.123456", "082.555.1234", "(+27) 82 555 1234 5",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := Scrub(s)
		if again := Scrub(out); again != out {
			t.Fatalf("Scrub is not idempotent on %q: %q then %q", s, out, again)
		}
		if left := secretSpans(out); len(left) > 0 {
			t.Fatalf("Scrub(%q) = %q still holds %q, which a rule masks", s, out, out[left[0].start:left[0].end])
		}
		for _, c := range secretShaped {
			if loc := c.re.FindStringIndex(out); loc != nil {
				t.Fatalf("Scrub(%q) = %q still holds %s: %q", s, out, c.what, out[loc[0]:loc[1]])
			}
		}
		var buf bytes.Buffer
		slog.New(NewHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: dropTime}))).
			Info(s, "v", s, s, "k", slog.Group("g", "v", s), "err", errors.New(s), "any", []string{s})
		if thirteenDigits.Match(buf.Bytes()) {
			t.Fatalf("logging %q wrote a 13-digit run: %s", s, buf.String())
		}
	})
}

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}
