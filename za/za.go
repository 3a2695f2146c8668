// Package za owns South African banking formats: the list of South African
// banks with their universal branch codes, the shape of their account
// numbers and branch codes, South African identity numbers, and the
// passports (number and issuing country) of holders who have none. It holds
// rules only (no storage, no I/O), so every part of kluis that takes such a
// number checks it the same way.
//
// Errors never quote the input: the values checked here are personal data
// or secrets, and an error message travels to logs and response bodies.
package za

import (
	"errors"
	"slices"
)

// Bank is one South African bank.
type Bank struct {
	// ID is kluis's stable name for the bank ("za_capitec"): what requests
	// send as bank_id and what accounts keep.
	ID   string
	Name string
	// UniversalBranchCode is the six-digit code that routes to any branch
	// of the bank.
	UniversalBranchCode string
	// MinDigits and MaxDigits bound the bank's account numbers; zero means
	// DefaultMinDigits and DefaultMaxDigits (no documented length).
	MinDigits, MaxDigits int
}

// AccountLengths returns the bank's account-number length range.
func (b Bank) AccountLengths() (lo, hi int) {
	lo, hi = b.MinDigits, b.MaxDigits
	if lo == 0 {
		lo = DefaultMinDigits
	}
	if hi == 0 {
		hi = DefaultMaxDigits
	}
	return lo, hi
}

// Banks returns the banks kluis knows, sorted by name. The slice is a copy.
func Banks() []Bank { return slices.Clone(banks) }

// BankByID returns the bank with that id.
func BankByID(id string) (Bank, bool) {
	i := slices.IndexFunc(banks, func(b Bank) bool { return b.ID == id })
	if i < 0 {
		return Bank{}, false
	}
	return banks[i], true
}

// Errors of the parsers. Each names what is wrong without the value.
var (
	ErrUnknownBank   = errors.New("za: unknown bank")
	ErrAccountDigits = errors.New("za: account number must be digits only")
	ErrAccountLength = errors.New("za: account number has the wrong length for the bank")
	ErrBranchCode    = errors.New("za: branch code must be 6 digits")
	ErrIDLength      = errors.New("za: ID number must be 13 digits")
	ErrIDBirthDate   = errors.New("za: ID number does not start with a real birth date")
	ErrIDCitizenship = errors.New("za: ID number has an unknown citizenship digit")
	ErrIDCheckDigit  = errors.New("za: ID number check digit is wrong")
	// ErrPassportCountry: not an assigned ISO 3166-1 alpha-2 code.
	ErrPassportCountry = errors.New("za: passport country must be an ISO 3166-1 alpha-2 code")
	// ErrPassportNumber: not 5 to 20 capital letters and digits.
	ErrPassportNumber = errors.New("za: passport number must be 5 to 20 capital letters and digits")
)

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// luhnValid reports whether the digit string s passes the Luhn check, its
// last digit being the check digit. s must be digits only.
func luhnValid(s string) bool {
	sum, double := 0, false
	for i := len(s) - 1; i >= 0; i-- {
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
	return sum%10 == 0
}
