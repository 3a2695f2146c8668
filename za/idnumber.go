package za

import "time"

// IDNumber is a parsed South African identity number. It is personal data:
// String and GoString show none of it, so a careless %v cannot log it.
type IDNumber struct {
	number string
	// BirthDate is the date the number starts with, in the most recent
	// century that puts it in the past (see ParseIDNumber).
	BirthDate time.Time
	// Citizenship is 0 for a South African citizen, 1 for a permanent
	// resident, 2 for a refugee.
	Citizenship int
}

// Number returns the 13 digits, for sealing.
func (n IDNumber) Number() string { return n.number }

// String keeps the number out of %v.
func (n IDNumber) String() string { return "IDNumber{[redacted]}" }

// GoString makes %#v as safe as %v.
func (n IDNumber) GoString() string { return n.String() }

// ParseIDNumber checks a South African identity number, YYMMDDSSSSCAZ
// (Department of Home Affairs):
//
//   - 13 digits, nothing else;
//   - YYMMDD a real date of birth, not after today. The number does not
//     say its century: kluis reads it in the most recent century that makes
//     it a past date (2000s, else 1900s). So "250101" is 2025-01-01 from
//     that day on, and 1925-01-01 before it; a person born in 1925 reads as
//     born in 2025. Validity does not depend on the choice (the date is
//     real in one century or the other; "000229" is real only in 2000), only
//     BirthDate does, and kluis uses the date for nothing but this check;
//   - SSSS, a sequence number (0000–4999 women, 5000–9999 men): any value;
//   - C, citizenship: 0 citizen, 1 permanent resident, and 2 refugee, which
//     some published descriptions of the format name and none excludes;
//     a refugee's valid number must not be refused;
//   - A: any digit (8 or 9 today; before 1994 it carried a race
//     classification, and such numbers were reissued; kluis does not refuse
//     one that was not);
//   - Z, the Luhn check digit over the whole number.
//
// today is the caller's clock (its date in South Africa's time zone is
// close enough: a birth date of tomorrow there is refused at worst for a
// few hours). Errors are the Err* values above and never quote the input.
func ParseIDNumber(s string, today time.Time) (IDNumber, error) {
	if len(s) != 13 || !allDigits(s) {
		return IDNumber{}, ErrIDLength
	}
	birth, ok := birthDate(s[:6], today)
	if !ok {
		return IDNumber{}, ErrIDBirthDate
	}
	c := int(s[10] - '0')
	if c > 2 {
		return IDNumber{}, ErrIDCitizenship
	}
	if !luhnValid(s) {
		return IDNumber{}, ErrIDCheckDigit
	}
	return IDNumber{number: s, BirthDate: birth, Citizenship: c}, nil
}

// birthDate reads YYMMDD (digits) as the most recent real date not after
// today.
func birthDate(yymmdd string, today time.Time) (time.Time, bool) {
	yy := int(yymmdd[0]-'0')*10 + int(yymmdd[1]-'0')
	mm := int(yymmdd[2]-'0')*10 + int(yymmdd[3]-'0')
	dd := int(yymmdd[4]-'0')*10 + int(yymmdd[5]-'0')
	y, m, d := today.Date()
	end := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	for _, century := range []int{2000, 1900} {
		t := time.Date(century+yy, time.Month(mm), dd, 0, 0, 0, 0, time.UTC)
		// time.Date normalizes 31 April to 1 May: a date is real only if
		// it comes back as given.
		if t.Year() != century+yy || int(t.Month()) != mm || t.Day() != dd {
			continue
		}
		if !t.After(end) {
			return t, true
		}
	}
	return time.Time{}, false
}
