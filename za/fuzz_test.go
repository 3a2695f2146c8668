package za

import (
	"testing"
)

// The fuzz targets check, for any input, that the parsers never panic, that
// what they accept has the shape promised, and that an ID number they accept
// is one they would accept again (the result does not depend on anything
// but the input and the date). Their committed corpora
// (testdata/fuzz/<target>) run with every `go test`.

func FuzzParseIDNumber(f *testing.F) {
	for _, s := range []string{"8001015009087", "0002295001086", "9702295009086", "8001015009088",
		"800101500908", "80010150090870", "8013015009087", "８００１０１５００９０８７", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseIDNumber(s, today)
		if err != nil {
			if n != (IDNumber{}) {
				t.Fatalf("an error with a value: %q", s)
			}
			return
		}
		if len(s) != 13 || !allDigits(s) || !luhnValid(s) || s[10] > '2' {
			t.Fatalf("accepted %q", s)
		}
		if n.BirthDate.After(today) || n.BirthDate.Format("060102") != s[:6] {
			t.Fatalf("%q: birth date %v", s, n.BirthDate)
		}
	})
}

func FuzzValidateAccountNumber(f *testing.F) {
	for _, s := range []string{"1234567890", "62012345678", "12345 67890", "", "0", "123456789012", "١٢٣٤٥٦٧٨٩٠"} {
		f.Add("za_capitec", s)
		f.Add("za_absa", s)
	}
	f.Add("za_nope", "1234567890")
	f.Fuzz(func(t *testing.T, bank, s string) {
		if ValidateAccountNumber(bank, s) != nil {
			return
		}
		b, ok := BankByID(bank)
		lo, hi := b.AccountLengths()
		if !ok || !allDigits(s) || len(s) < lo || len(s) > hi {
			t.Fatalf("accepted %q for %q", s, bank)
		}
	})
}

func FuzzParseBranchCode(f *testing.F) {
	for _, s := range []string{"", "250655", "051001", "25065", "2506550", "250 655", "٢٥٠٦٥٥"} {
		f.Add("za_fnb", s)
	}
	f.Add("za_nope", "250655")
	f.Fuzz(func(t *testing.T, bank, s string) {
		code, err := ParseBranchCode(bank, s)
		if err != nil {
			if code != "" {
				t.Fatalf("an error with a code: %q", s)
			}
			return
		}
		if len(code) != 6 || !allDigits(code) || (s != "" && code != s) {
			t.Fatalf("ParseBranchCode(%q, %q) = %q", bank, s, code)
		}
	})
}
