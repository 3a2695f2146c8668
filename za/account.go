package za

// ValidateAccountNumber checks a South African account number for the bank
// bankID: digits only (no spaces or dashes: an app normalizes before it
// sends), of a length the bank issues (Bank.AccountLengths). It applies no
// check digit (see banks.go). An unknown bank is ErrUnknownBank.
func ValidateAccountNumber(bankID, number string) error {
	b, ok := BankByID(bankID)
	if !ok {
		return ErrUnknownBank
	}
	if !allDigits(number) {
		return ErrAccountDigits
	}
	lo, hi := b.AccountLengths()
	if len(number) < lo || len(number) > hi {
		return ErrAccountLength
	}
	return nil
}

// ParseBranchCode checks a branch code: exactly six digits. An empty code is
// the bank's universal branch code, which it returns; any other six-digit
// code is taken as the bank's own branch code (banks still honour the old
// per-branch codes, and no public source lists them all, so kluis does not
// refuse one it does not know). An unknown bank is ErrUnknownBank.
func ParseBranchCode(bankID, code string) (string, error) {
	b, ok := BankByID(bankID)
	if !ok {
		return "", ErrUnknownBank
	}
	if code == "" {
		return b.UniversalBranchCode, nil
	}
	if len(code) != 6 || !allDigits(code) {
		return "", ErrBranchCode
	}
	return code, nil
}
