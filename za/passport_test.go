package za

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestParsePassport(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, number, country string
		want                  error
	}{
		{"a Zimbabwean passport", "FN123456", "ZW", nil},
		{"a British passport of nine digits", "123456789", "GB", nil},
		{"a South African passport", "A01234567", "ZA", nil},
		{"a German passport with letters inside", "C01X00T47", "DE", nil},
		{"the shortest number taken", "AB123", "NG", nil},
		{"the longest number taken", "A1234567890123456789", "IN", nil},

		{"an empty country", "FN123456", "", ErrPassportCountry},
		{"a lower-case country", "FN123456", "zw", ErrPassportCountry},
		{"a three-letter country", "FN123456", "ZWE", ErrPassportCountry},
		{"a user-assigned code", "FN123456", "ZZ", ErrPassportCountry},
		{"Kosovo's user-assigned code", "FN123456", "XK", ErrPassportCountry},
		{"a reserved code", "FN123456", "EU", ErrPassportCountry},
		{"a numeric country", "FN123456", "71", ErrPassportCountry},
		{"an empty number", "", "ZW", ErrPassportNumber},
		{"four characters", "AB12", "ZW", ErrPassportNumber},
		{"21 characters", "A12345678901234567890", "ZW", ErrPassportNumber},
		{"lower case", "fn123456", "ZW", ErrPassportNumber},
		{"a space", "FN 123456", "ZW", ErrPassportNumber},
		{"a dash", "FN-123456", "ZW", ErrPassportNumber},
		{"the MRZ filler", "FN123456<", "ZW", ErrPassportNumber},
		{"letters only (a name)", "DUBEMARIA", "ZW", ErrPassportNumber},
		{"full-width digits", "ＦＮ１２３４５６", "ZW", ErrPassportNumber},
		{"a newline", "FN123456\n", "ZW", ErrPassportNumber},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := ParsePassport(tc.number, tc.country)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParsePassport(%q, %q) = %v, want %v", tc.number, tc.country, err, tc.want)
			}
			if err != nil {
				if p != (Passport{}) {
					t.Fatal("an error with a value")
				}
				if tc.number != "" && strings.Contains(err.Error(), tc.number) {
					t.Fatalf("the error quotes the input: %v", err)
				}
				return
			}
			if p.Number() != tc.number || p.Country() != tc.country {
				t.Fatalf("parsed %q %q", p.Number(), p.Country())
			}
			for _, s := range []string{fmt.Sprint(p), fmt.Sprintf("%+v", p), fmt.Sprintf("%#v", p)} {
				if strings.Contains(s, tc.number) {
					t.Fatalf("printing shows the number: %s", s)
				}
			}
		})
	}
}

func TestTheCountryCodesAreTheAssignedOnes(t *testing.T) {
	t.Parallel()
	if len(countryCodes) != 249 {
		t.Fatalf("%d codes; ISO 3166-1 assigns 249", len(countryCodes))
	}
	if !slices.IsSorted(countryCodes) {
		t.Fatal("the codes are not sorted (CountryCode searches them)")
	}
	for i, c := range countryCodes {
		if len(c) != 2 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' || (i > 0 && countryCodes[i-1] == c) {
			t.Fatalf("code %d %q", i, c)
		}
	}
	for _, c := range []string{"ZA", "ZW", "BW", "NA", "LS", "SZ", "MZ", "GB", "US", "IN", "CN", "NG"} {
		if !CountryCode(c) {
			t.Fatalf("%s is refused", c)
		}
	}
}

func FuzzParsePassport(f *testing.F) {
	for _, s := range [][2]string{{"FN123456", "ZW"}, {"123456789", "GB"}, {"AB12", "ZA"}, {"fn123456", "ZW"},
		{"A1234567890123456789", "IN"}, {"FN123456", "ZZ"}, {"ＦＮ１２３４５６", "ZW"}, {"", ""}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, number, country string) {
		p, err := ParsePassport(number, country)
		if err != nil {
			if p != (Passport{}) {
				t.Fatal("an error with a value")
			}
			return
		}
		if !CountryCode(country) || len(number) < MinPassportLen || len(number) > MaxPassportLen ||
			strings.Trim(number, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" || !strings.ContainsAny(number, "0123456789") {
			t.Fatalf("accepted %q %q", number, country)
		}
	})
}
