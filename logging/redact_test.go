package logging

import (
	"bytes"
	"errors"
	"log/slog"
	"regexp"
	"strings"
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

var thirteenDigits = regexp.MustCompile(`[0-9]{13}`)

func FuzzRedact(f *testing.F) {
	for _, s := range []string{
		"8001015009087", "+27 82 555 1234", "4111 1111 1111 1111", "12:00:00.1234567890123",
		"Bearer eyJ.a.b", "0.123456789", "1-2-3-4-5-6-7-8-9-0-1-2-3", "+27+27 0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := Scrub(s)
		if thirteenDigits.MatchString(out) {
			t.Fatalf("Scrub(%q) = %q still holds a 13-digit run", s, out)
		}
		var buf bytes.Buffer
		slog.New(NewHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: dropTime}))).
			Info(s, "v", s, s, "k", slog.Group("g", "v", s), "err", errors.New(s), "any", []string{s})
		if thirteenDigits.Match(buf.Bytes()) {
			t.Fatalf("logging %q wrote a 13-digit run: %s", s, buf.String())
		}
		if strings.Contains(s, Redacted) {
			return
		}
		if Scrub(out) != out {
			t.Fatalf("Scrub is not idempotent on %q: %q then %q", s, out, Scrub(out))
		}
	})
}

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}
