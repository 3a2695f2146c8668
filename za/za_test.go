package za

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// today is the fixed clock of these tests.
var today = time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)

// withCheck appends the Luhn check digit to 12 digits, so that cases are
// built as real numbers are.
func withCheck(t testing.TB, twelve string) string {
	t.Helper()
	for z := '0'; z <= '9'; z++ {
		if s := twelve + string(z); luhnValid(s) {
			return s
		}
	}
	t.Fatalf("no check digit for %q", twelve)
	return ""
}

// wrongCheck returns the number with its check digit off by one.
func wrongCheck(s string) string {
	z := (s[12]-'0'+1)%10 + '0'
	return s[:12] + string(rune(z))
}

func TestParseIDNumber(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    error
		born    string // YYYY-MM-DD when valid
		citizen int
	}{
		{"a published example is valid", "8001015009087", nil, "1980-01-01", 0},
		{"a citizen born in 1985 is valid", withCheck(t, "850203500908"), nil, "1985-02-03", 0},
		{"a permanent resident is valid", withCheck(t, "900615012318"), nil, "1990-06-15", 1},
		{"a refugee is valid", withCheck(t, "920101123428"), nil, "1992-01-01", 2},
		{"a child born this century is valid", withCheck(t, "150704500108"), nil, "2015-07-04", 0},
		{"a birth date earlier this year is this century", withCheck(t, "260101500108"), nil, "2026-01-01", 0},
		{"a birth date of today is valid", withCheck(t, "261205500108"), nil, "2026-12-05", 0},
		{"a birth date later this year is last century", withCheck(t, "261206500108"), nil, "1926-12-06", 0},
		{"29 February 2000 is a real date", withCheck(t, "000229500108"), nil, "2000-02-29", 0},
		{"29 February 1996 is a real date", withCheck(t, "960229500108"), nil, "1996-02-29", 0},
		{"an old race digit is not refused", withCheck(t, "700101500903"), nil, "1970-01-01", 0},

		{"empty is refused", "", ErrIDLength, "", 0},
		{"12 digits are refused", "800101500908", ErrIDLength, "", 0},
		{"14 digits are refused", "80010150090870", ErrIDLength, "", 0},
		{"a space is refused", "800101 5009087", ErrIDLength, "", 0},
		{"spaces around are refused", " 8001015009087", ErrIDLength, "", 0},
		{"a letter is refused", "80010150090A7", ErrIDLength, "", 0},
		{"non-ASCII digits are refused", "８００１０１５００９０８７", ErrIDLength, "", 0},
		{"month 13 is refused", withCheck(t, "801301500908"), ErrIDBirthDate, "", 0},
		{"month 00 is refused", withCheck(t, "800001500908"), ErrIDBirthDate, "", 0},
		{"day 00 is refused", withCheck(t, "800100500908"), ErrIDBirthDate, "", 0},
		{"31 April is refused", withCheck(t, "800431500908"), ErrIDBirthDate, "", 0},
		{"29 February of a common year is refused", withCheck(t, "970229500908"), ErrIDBirthDate, "", 0},
		{"30 February is refused", withCheck(t, "960230500908"), ErrIDBirthDate, "", 0},
		{"citizenship 3 is refused", withCheck(t, "800101500938"), ErrIDCitizenship, "", 0},
		{"citizenship 9 is refused", withCheck(t, "800101500998"), ErrIDCitizenship, "", 0},
		{"a wrong check digit is refused", wrongCheck("8001015009087"), ErrIDCheckDigit, "", 0},
		{"two swapped digits are refused", "8001010509087", ErrIDCheckDigit, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseIDNumber(tt.in, today)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseIDNumber = %v, want %v", err, tt.want)
			}
			if err != nil {
				return
			}
			if d := got.BirthDate.Format(time.DateOnly); d != tt.born {
				t.Errorf("BirthDate = %s, want %s", d, tt.born)
			}
			if got.Citizenship != tt.citizen {
				t.Errorf("Citizenship = %d, want %d", got.Citizenship, tt.citizen)
			}
			if got.Number() != tt.in {
				t.Errorf("Number() is not the input")
			}
		})
	}
}

func TestIDNumberNeverPrintsItself(t *testing.T) {
	t.Parallel()
	n, err := ParseIDNumber("8001015009087", today)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(f, n); strings.Contains(out, "8001015009087") || strings.Contains(out, "800101") {
			t.Errorf("%s prints the number: %s", f, out)
		}
	}
	_, err = ParseIDNumber("8001015009088", today)
	if strings.Contains(err.Error(), "800101") {
		t.Errorf("the error quotes the input: %v", err)
	}
}

func TestValidateAccountNumber(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, bank, number string
		want               error
	}{
		{"a 10-digit Capitec number is valid", "za_capitec", "1234567890", nil},
		{"a 9-digit Capitec number is refused", "za_capitec", "123456789", ErrAccountLength},
		{"an 11-digit Capitec number is refused", "za_capitec", "12345678901", ErrAccountLength},
		{"an 11-digit FNB number is valid", "za_fnb", "62012345678", nil},
		{"a 10-digit FNB number is refused", "za_fnb", "6201234567", ErrAccountLength},
		{"an 8-digit Absa number is valid", "za_absa", "40123456", nil},
		{"an 11-digit Absa number is valid", "za_absa", "40123456789", nil},
		{"a 7-digit Absa number is refused", "za_absa", "4012345", ErrAccountLength},
		{"a 12-digit Absa number is refused", "za_absa", "401234567890", ErrAccountLength},
		{"a 10-digit Nedbank number is valid", "za_nedbank", "1012345678", nil},
		{"an 11-digit Nedbank number is valid", "za_nedbank", "20123456789", nil},
		{"a 9-digit Nedbank number is refused", "za_nedbank", "101234567", ErrAccountLength},
		{"a bank without a documented length takes 7 digits", "za_tymebank", "5112345", nil},
		{"a bank without a documented length takes 11 digits", "za_tymebank", "51123456789", nil},
		{"a bank without a documented length refuses 6 digits", "za_standard_bank", "123456", ErrAccountLength},
		{"a bank without a documented length refuses 12 digits", "za_standard_bank", "123456789012", ErrAccountLength},
		{"a space is refused", "za_capitec", "12345 67890", ErrAccountDigits},
		{"a dash is refused", "za_capitec", "12345-67890", ErrAccountDigits},
		{"a letter is refused", "za_capitec", "123456789O", ErrAccountDigits},
		{"a sign is refused", "za_capitec", "+123456789", ErrAccountDigits},
		{"empty is refused", "za_capitec", "", ErrAccountDigits},
		{"an unknown bank is refused", "za_nope", "1234567890", ErrUnknownBank},
		{"a bank id is case-sensitive", "ZA_CAPITEC", "1234567890", ErrUnknownBank},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := ValidateAccountNumber(tt.bank, tt.number); !errors.Is(err, tt.want) {
				t.Errorf("ValidateAccountNumber(%q, %q) = %v, want %v", tt.bank, tt.number, err, tt.want)
			}
		})
	}
}

func TestParseBranchCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, bank, code, want string
		err                    error
	}{
		{"no code is the universal branch code", "za_capitec", "", "470010", nil},
		{"Standard Bank's code keeps its leading zero", "za_standard_bank", "", "051001", nil},
		{"the universal code is taken", "za_fnb", "250655", "250655", nil},
		{"a branch's own code is taken", "za_fnb", "250355", "250355", nil},
		{"five digits are refused", "za_fnb", "25065", "", ErrBranchCode},
		{"seven digits are refused", "za_fnb", "2506550", "", ErrBranchCode},
		{"a space is refused", "za_fnb", "250 655", "", ErrBranchCode},
		{"a letter is refused", "za_fnb", "25065S", "", ErrBranchCode},
		{"an unknown bank is refused", "za_nope", "250655", "", ErrUnknownBank},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseBranchCode(tt.bank, tt.code)
			if !errors.Is(err, tt.err) || got != tt.want {
				t.Errorf("ParseBranchCode(%q, %q) = %q, %v; want %q, %v", tt.bank, tt.code, got, err, tt.want, tt.err)
			}
		})
	}
}

// TestBankList keeps the data file well formed: unique ids of the za_
// form, six-digit codes, sane lengths, sorted by name, and the codes that
// the issue names.
func TestBankList(t *testing.T) {
	t.Parallel()
	list := Banks()
	if len(list) == 0 {
		t.Fatal("no banks")
	}
	seen := map[string]bool{}
	for _, b := range list {
		if !strings.HasPrefix(b.ID, "za_") || seen[b.ID] {
			t.Errorf("bank id %q is not unique or not za_-prefixed", b.ID)
		}
		seen[b.ID] = true
		if len(b.UniversalBranchCode) != 6 || !allDigits(b.UniversalBranchCode) {
			t.Errorf("%s: universal branch code %q is not six digits", b.ID, b.UniversalBranchCode)
		}
		if lo, hi := b.AccountLengths(); lo < 1 || hi < lo || hi > 11 {
			t.Errorf("%s: account lengths %d..%d", b.ID, lo, hi)
		}
		if b.Name == "" {
			t.Errorf("%s has no name", b.ID)
		}
	}
	if !slices.IsSortedFunc(list, func(a, b Bank) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("banks are not sorted by name")
	}
	want := map[string]string{"za_absa": "632005", "za_capitec": "470010", "za_fnb": "250655", "za_nedbank": "198765",
		"za_standard_bank": "051001", "za_investec": "580105", "za_african_bank": "430000", "za_tymebank": "678910",
		"za_discovery": "679000", "za_bidvest": "462005"}
	for id, code := range want {
		if b, ok := BankByID(id); !ok || b.UniversalBranchCode != code {
			t.Errorf("%s: got %+v, want code %s", id, b, code)
		}
	}
	list[0].Name = "changed"
	if Banks()[0].Name == "changed" {
		t.Error("Banks returns the list itself, not a copy")
	}
	if _, err := time.Parse(time.DateOnly, BanksChecked); err != nil {
		t.Errorf("BanksChecked %q is not a date", BanksChecked)
	}
}
