package api

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api/idempotency"
)

// Fuzz targets of the request decoders. Each checks that a decoder never
// panics, that it fails only with a caller's error (400, never a 500), and
// that its error never echoes the input. Bank-linking and verification
// decoders get targets of their own beside their handlers.

// safeRefusal fails the target if err is not a 400/413 kluis error or
// carries a long run of the input.
func safeRefusal(t *testing.T, err error, input []byte) {
	t.Helper()
	if err == nil {
		return
	}
	if code := kluis.ErrorCode(err); code != kluis.EInvalid && code != kluis.ETooLarge {
		t.Fatalf("error code %q for bad input, want %q", code, kluis.EInvalid)
	}
	msg := kluis.ErrorMessage(err)
	if len(input) >= 12 && utf8.Valid(input) && strings.Contains(msg, string(input)) {
		t.Fatalf("error message %q echoes the input", msg)
	}
}

func FuzzDecodeRevealRequest(f *testing.F) {
	for _, s := range []string{`{"purpose":"payment_initiation"}`, `{}`, `{"purpose":1}`, `{"purpose":"a","x":1}`, `[]`, `{"purpose":"a"}{}`, "", `{"purpose":"\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req revealRequest
		err := DecodeStrict(body, &req)
		safeRefusal(t, err, body)
		if err == nil && namePattern.MatchString(req.Purpose) && len(req.Purpose) > 128 {
			t.Fatalf("purpose of %d bytes passes the name pattern", len(req.Purpose))
		}
	})
}

func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{`{"a":"b"}`, `{"a":{"b":[1,2,3]}}`, `"x"`, `1e999`, `{"a":"b"} x`, `{`, `{"a":"\ud800"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var v struct {
			A string         `json:"a"`
			B []int          `json:"b"`
			C map[string]any `json:"c"`
		}
		safeRefusal(t, DecodeStrict(body, &v), body)
	})
}

func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		"services:\n  payments:\n    reveal:\n      kinds: [bank_access_token]\n      purposes: [payment_initiation]\n",
		"services:\n  console:\n    compliance: true\n", "services: {}\n", "services: [1, 2]\n", "a: &a [*a]\n", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := ParsePolicy(raw)
		if err != nil {
			return
		}
		// A parsed policy answers without panicking, and only for what it names.
		if p.Knows("") || p.MayReveal("", "", "") || p.MayCarryCompliance("") {
			t.Fatal("a policy grants something to the empty service name")
		}
	})
}

func FuzzIdempotencyKey(f *testing.F) {
	for _, s := range []string{"order-42", "", strings.Repeat("k", 256), "a\tb", "clé", " "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if !idempotency.ValidKey(key) {
			return
		}
		if len(key) < 1 || len(key) > 255 {
			t.Fatalf("a key of %d bytes is accepted", len(key))
		}
		for _, r := range key {
			if r < 0x20 || r > 0x7e {
				t.Fatalf("a key with %U is accepted", r)
			}
		}
	})
}
