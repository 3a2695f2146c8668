package za

import "slices"

// Passport is a parsed passport of a bank account's holder who has no
// South African ID number (a foreign national): its number and the
// ISO 3166-1 alpha-2 code of the country that issued it. Like IDNumber it
// is personal data: String and GoString show none of it.
type Passport struct {
	number, country string
}

// Number returns the passport number, for sealing and for the bank.
func (p Passport) Number() string { return p.number }

// Country returns the issuing country's ISO 3166-1 alpha-2 code.
func (p Passport) Country() string { return p.country }

// String keeps the number out of %v.
func (p Passport) String() string { return "Passport{[redacted]}" }

// GoString makes %#v as safe as %v.
func (p Passport) GoString() string { return p.String() }

// Bounds of a passport number's length. ICAO Doc 9303 gives the document
// number nine characters in the machine-readable zone, and lets longer
// numbers run over into its optional data; kluis takes up to
// MaxPassportLen so that such numbers are not refused, and no fewer than
// MinPassportLen, which no issuing country goes below.
const (
	MinPassportLen = 5
	MaxPassportLen = 20
)

// ParsePassport checks a passport number and its issuing country:
//
//   - country: an officially assigned ISO 3166-1 alpha-2 code, in capitals
//     ("ZA", "ZW", "GB"); user-assigned and reserved codes ("ZZ", "XK",
//     "EU") are refused;
//   - number: MinPassportLen to MaxPassportLen capital letters A–Z and
//     digits (the characters of ICAO Doc 9303's machine-readable zone, less
//     its filler '<'), with at least one digit: no spaces, dashes or
//     lower case (an app normalizes before it sends, as for account
//     numbers). No country's own number format is applied: they are not
//     published alike, and the bank, not kluis, says whether the number is
//     the holder's.
//
// Errors are ErrPassportCountry and ErrPassportNumber and never quote the
// input.
func ParsePassport(number, country string) (Passport, error) {
	if !CountryCode(country) {
		return Passport{}, ErrPassportCountry
	}
	if len(number) < MinPassportLen || len(number) > MaxPassportLen {
		return Passport{}, ErrPassportNumber
	}
	digit := false
	for i := 0; i < len(number); i++ {
		c := number[i]
		switch {
		case c >= '0' && c <= '9':
			digit = true
		case c >= 'A' && c <= 'Z':
		default:
			return Passport{}, ErrPassportNumber
		}
	}
	if !digit {
		return Passport{}, ErrPassportNumber
	}
	return Passport{number: number, country: country}, nil
}

// CountryCode reports whether s is an officially assigned ISO 3166-1
// alpha-2 country code (capitals).
func CountryCode(s string) bool {
	_, ok := slices.BinarySearch(countryCodes, s)
	return ok
}

// countryCodes are the 249 officially assigned ISO 3166-1 alpha-2 codes,
// sorted (checked on 2026-12-05 against the ISO 3166 Maintenance Agency's
// list, as published in the standard's online browsing platform).
var countryCodes = []string{
	"AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
	"BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY", "BZ",
	"CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ",
	"DE", "DJ", "DK", "DM", "DO", "DZ",
	"EC", "EE", "EG", "EH", "ER", "ES", "ET",
	"FI", "FJ", "FK", "FM", "FO", "FR",
	"GA", "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY",
	"HK", "HM", "HN", "HR", "HT", "HU",
	"ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT",
	"JE", "JM", "JO", "JP",
	"KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ",
	"LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY",
	"MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ",
	"NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ",
	"OM",
	"PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY",
	"QA",
	"RE", "RO", "RS", "RU", "RW",
	"SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST", "SV", "SX", "SY", "SZ",
	"TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW", "TZ",
	"UA", "UG", "UM", "US", "UY", "UZ",
	"VA", "VC", "VE", "VG", "VI", "VN", "VU",
	"WF", "WS",
	"YE", "YT",
	"ZA", "ZM", "ZW",
}
