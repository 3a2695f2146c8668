package verification

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink/accountnumber"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/za"
)

// Account types of manual entry (accounts.subtype; type is depository):
// checking and savings for US accounts; cheque, savings and transmission
// for South African ones.
const (
	TypeChecking     = "checking"
	TypeSavings      = "savings"
	TypeCheque       = "cheque"
	TypeTransmission = "transmission"
)

// Countries of manual entry (accounts.country).
const (
	CountryUS = "US"
	CountryZA = "ZA"
)

// MaxHolderNameLen bounds the holder's name, in characters.
const MaxHolderNameLen = 128

// ManualAccount is an account entered by hand. Every field but Country,
// AccountType and BankID is a secret or personal data: it is sealed in the
// vault, never stored or logged in the clear, and printing it shows none
// of it. A US account has a RoutingNumber; a South African one (Country
// ZA) has a BankID from the za package's list, a BranchCode (the bank's
// universal code when empty) and, optionally, the holder's South African
// ID number or, for a holder who has none, their passport's number and
// issuing country (one or the other, never both).
type ManualAccount struct {
	Country        string
	AccountNumber  string
	RoutingNumber  string
	BankID         string
	BranchCode     string
	AccountType    string
	HolderName     string
	HolderIDNumber string
	// HolderPassportNumber and HolderPassportCountry (ISO 3166-1
	// alpha-2) come together.
	HolderPassportNumber  string
	HolderPassportCountry string
}

// String keeps the numbers and the name out of %v.
func (m ManualAccount) String() string {
	return "ManualAccount{Country:" + m.Country + " AccountType:" + m.AccountType + " [numbers and name redacted]}"
}

// GoString makes %#v as safe as %v.
func (m ManualAccount) GoString() string { return m.String() }

// fieldError is a 400 that names the request field at fault, in its
// message and as error.field. The message never quotes the input.
func fieldError(field, format string, args ...any) error {
	return kluis.Errorf(kluis.EInvalid, field+" "+format, args...).With("field", field)
}

// Validate checks a manual account as of now (see validate).
func (m ManualAccount) Validate() error { return m.validate(time.Now()) }

// validate checks a manual account. Country is US (the default when empty)
// or ZA. A US account: the account number 4 to 17 digits, the routing
// number a US ABA routing number (nine digits, a Federal Reserve prefix,
// and the check digit), the type checking or savings, and none of the
// South African fields. A South African account: a bank of za.Banks, an
// account number of the length that bank issues, a branch code of six
// digits if given, the type cheque, savings or transmission, a holder ID
// number (if given) that za.ParseIDNumber accepts as of today or else a
// passport (number and country, both given) that za.ParsePassport
// accepts, and no routing number. Both: the holder's name present, printable and at most
// MaxHolderNameLen characters. Each error names its field and never quotes
// the input.
func (m ManualAccount) validate(today time.Time) error {
	switch m.Country {
	case "", CountryUS:
		if err := m.validateUS(); err != nil {
			return err
		}
	case CountryZA:
		if err := m.validateZA(today); err != nil {
			return err
		}
	default:
		return fieldError("country", "must be US or ZA")
	}
	name := strings.TrimSpace(m.HolderName)
	if name == "" || !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxHolderNameLen {
		return fieldError("holder_name", "is required: at most %d characters", MaxHolderNameLen)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fieldError("holder_name", "must be printable text")
		}
	}
	return nil
}

func (m ManualAccount) validateUS() error {
	for _, f := range []struct{ name, value string }{{"bank_id", m.BankID}, {"branch_code", m.BranchCode}, {"holder_id_number", m.HolderIDNumber},
		{"holder_passport_number", m.HolderPassportNumber}, {"holder_passport_country", m.HolderPassportCountry}} {
		if f.value != "" {
			return fieldError(f.name, "is for South African accounts (country ZA) only")
		}
	}
	if !digits(m.AccountNumber, 4, 17) {
		return fieldError("account_number", "must be 4 to 17 digits")
	}
	if !ValidRoutingNumber(m.RoutingNumber) {
		return fieldError("routing_number", "is not a valid US ABA routing number")
	}
	if m.AccountType != TypeChecking && m.AccountType != TypeSavings {
		return fieldError("account_type", "must be checking or savings")
	}
	return nil
}

func (m ManualAccount) validateZA(today time.Time) error {
	if m.RoutingNumber != "" {
		return fieldError("routing_number", "is for US accounts only: a South African account names its bank_id and branch_code")
	}
	bank, ok := za.BankByID(m.BankID)
	if !ok {
		return fieldError("bank_id", "is not a South African bank kluis knows (GET /v1/banks?country=ZA lists them)")
	}
	if _, err := za.ParseBranchCode(bank.ID, m.BranchCode); err != nil {
		return fieldError("branch_code", "must be 6 digits")
	}
	switch err := za.ValidateAccountNumber(bank.ID, m.AccountNumber); {
	case errors.Is(err, za.ErrAccountLength):
		lo, hi := bank.AccountLengths()
		if lo == hi {
			return fieldError("account_number", "must be %d digits at this bank", lo)
		}
		return fieldError("account_number", "must be %d to %d digits at this bank", lo, hi)
	case err != nil:
		return fieldError("account_number", "must be digits only")
	}
	if m.AccountType != TypeCheque && m.AccountType != TypeSavings && m.AccountType != TypeTransmission {
		return fieldError("account_type", "must be cheque, savings or transmission")
	}
	if m.HolderIDNumber != "" {
		if m.HolderPassportNumber != "" || m.HolderPassportCountry != "" {
			return fieldError("holder_passport_number", "is for a holder without a South African ID number: give holder_id_number or a passport, not both")
		}
		if _, err := za.ParseIDNumber(m.HolderIDNumber, today); err != nil {
			return fieldError("holder_id_number", "%s", idNumberProblem(err))
		}
	}
	return m.validatePassport()
}

// validatePassport checks the holder's passport, when one is given: its
// number and its country together, each as za.ParsePassport wants it.
func (m ManualAccount) validatePassport() error {
	switch {
	case m.HolderPassportNumber == "" && m.HolderPassportCountry == "":
		return nil
	case m.HolderPassportCountry == "":
		return fieldError("holder_passport_country", "is required with holder_passport_number: the issuing country's ISO 3166-1 alpha-2 code")
	case m.HolderPassportNumber == "":
		return fieldError("holder_passport_number", "is required with holder_passport_country")
	}
	if _, err := za.ParsePassport(m.HolderPassportNumber, m.HolderPassportCountry); errors.Is(err, za.ErrPassportCountry) {
		return fieldError("holder_passport_country", "must be an ISO 3166-1 alpha-2 country code in capitals (ZW, GB, …)")
	} else if err != nil {
		return fieldError("holder_passport_number", "must be %d to %d capital letters and digits, with at least one digit and no spaces",
			za.MinPassportLen, za.MaxPassportLen)
	}
	return nil
}

// idNumberProblem says what is wrong with an ID number, in words that hold
// none of it.
func idNumberProblem(err error) string {
	switch {
	case errors.Is(err, za.ErrIDBirthDate):
		return "does not start with a real date of birth (YYMMDD)"
	case errors.Is(err, za.ErrIDCitizenship):
		return "has an unknown citizenship digit (the 11th: 0, 1 or 2)"
	case errors.Is(err, za.ErrIDCheckDigit):
		return "has a wrong check digit"
	}
	return "must be a South African ID number: 13 digits"
}

func digits(s string, lo, hi int) bool {
	if len(s) < lo || len(s) > hi {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ValidRoutingNumber reports whether s is a US ABA routing transit number:
// nine digits whose first two name a Federal Reserve district (01–12),
// a thrift (21–32), an electronic one (61–72) or traveler's checks (80),
// and whose check digit holds: 3·(d1+d4+d7) + 7·(d2+d5+d8) + (d3+d6+d9)
// is a multiple of 10.
func ValidRoutingNumber(s string) bool {
	if !digits(s, 9, 9) {
		return false
	}
	p := int(s[0]-'0')*10 + int(s[1]-'0')
	if !(p >= 1 && p <= 12 || p >= 21 && p <= 32 || p >= 61 && p <= 72 || p == 80) {
		return false
	}
	d := func(i int) int { return int(s[i] - '0') }
	sum := 3*(d(0)+d(3)+d(6)) + 7*(d(1)+d(4)+d(7)) + d(2) + d(5) + d(8)
	return sum%10 == 0
}

// sealedNumbers is the secret of an account_number credential of a US
// account. The holder's name rides in the same envelope: it is personal
// data kluis needs only for the rail's entry, so it lives nowhere else,
// leaves only through reveal, and goes with the subject's keys on erasure.
type sealedNumbers struct {
	AccountNumber string `json:"account_number"`
	RoutingNumber string `json:"routing_number"`
	HolderName    string `json:"holder_name,omitempty"`
}

// sealedZANumbers is the secret of a South African account's
// account_number credential (the reveal answer of api/openapi.yaml): everything a bank account
// verification or a payment needs to address the account, the holder's
// name beside it as for US accounts.
type sealedZANumbers struct {
	AccountNumber string `json:"account_number"`
	BranchCode    string `json:"branch_code"`
	BankID        string `json:"bank_id"`
	HolderName    string `json:"holder_name,omitempty"`
}

// sealedIDNumber is the secret of an id_number credential: the holder's
// identifying document, their South African ID number or else their
// passport's number and issuing country.
type sealedIDNumber struct {
	IDNumber        string `json:"id_number,omitempty"`
	PassportNumber  string `json:"passport_number,omitempty"`
	PassportCountry string `json:"passport_country,omitempty"`
}

// CreateManualAccount stores an account the user entered by hand: numbers
// and name sealed in the vault (with the blind index of the account
// number), the holder's ID number (South Africa, when given) sealed as its
// own id_number credential (with its own blind index, so that a later bank
// account verification and its limits can find it without opening it) or
// in its place the holder's passport (the same kind of credential, without
// a blind index), the account keeping its mask, country, bank and the credentials' references,
// its verification status unverified. The same account entered again by
// the same subject (the same account number with the same routing number,
// or at the same South African bank), while the first is live, is a
// conflict (the error names the existing account): one account, one
// verification.
func (s *Service) CreateManualAccount(ctx context.Context, actor audit.Actor, m ManualAccount) (Account, error) {
	now := s.now()
	if err := m.validate(now); err != nil {
		return Account{}, err
	}
	m.HolderName = strings.TrimSpace(m.HolderName)
	if m.Country == "" {
		m.Country = CountryUS
	}
	if m.Country == CountryZA {
		m.BranchCode, _ = za.ParseBranchCode(m.BankID, m.BranchCode) // validated above
	}
	a := Account{ID: kluis.NewID(kluis.PrefixAccount), Mask: m.AccountNumber[len(m.AccountNumber)-4:],
		Type: "depository", Subtype: m.AccountType, Name: manualName(m.AccountType),
		VerificationStatus: AccountUnverified, CreatedAt: now, Country: m.Country, BankID: m.BankID}
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		subjectID, err := vault.EnsureSubject(ctx, tx, actor.Name)
		if err != nil {
			return err
		}
		a.SubjectID = subjectID
		// One subject's manual entries are serialized, so two concurrent
		// entries of one account cannot both pass the duplicate check.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('kluis/manual-account/' || $1, 0))`, subjectID); err != nil {
			return dbErr("lock subject", err)
		}
		if dup, err := s.duplicate(ctx, tx, subjectID, m); err != nil || dup != "" {
			if err == nil {
				err = kluis.Errorf(kluis.EConflict, "this account was already entered").With("account_id", dup)
			}
			return err
		}
		if err := s.sealManual(ctx, tx, &a, m); err != nil {
			return err
		}
		if err := s.accounts.CreateManual(ctx, tx, a); err != nil {
			return err
		}
		// References only: the entry outlives an erasure, so it says
		// nothing of the person (not even their bank) beyond what was
		// already logged for every manual account.
		details := map[string]any{"account_number_ref": a.AccountNumberRef, "subtype": a.Subtype}
		if a.HolderIDRef != "" {
			details["holder_id_ref"] = a.HolderIDRef
		}
		return s.audit.Append(ctx, tx, audit.Entry{
			ActorKind: actor.Kind, Actor: actor.Name, Action: "account.created_manual", Target: a.ID,
			Outcome: audit.OutcomeSuccess, Subject: actor.Name, RequestID: actor.RequestID,
			Details: details,
		})
	})
	if err != nil {
		return Account{}, err
	}
	return a, nil
}

// sealManual seals the account's numbers and, when given, the holder's ID
// number or passport, setting a's references. Every plaintext copy made here is zeroed
// before it returns.
func (s *Service) sealManual(ctx context.Context, tx pgx.Tx, a *Account, m ManualAccount) error {
	var secret []byte
	var err error
	if m.Country == CountryZA {
		secret, err = json.Marshal(sealedZANumbers{m.AccountNumber, m.BranchCode, m.BankID, m.HolderName})
	} else {
		secret, err = json.Marshal(sealedNumbers{m.AccountNumber, m.RoutingNumber, m.HolderName})
	}
	if err != nil {
		return err
	}
	defer clear(secret)
	if a.AccountNumberRef, err = s.vault.Seal(ctx, tx, vault.AccountOwner(a.ID), a.SubjectID, accountnumber.Kind, secret, m.AccountNumber); err != nil {
		return err
	}
	if m.HolderIDNumber == "" && m.HolderPassportNumber == "" {
		return nil
	}
	id, err := json.Marshal(sealedIDNumber{IDNumber: m.HolderIDNumber, PassportNumber: m.HolderPassportNumber,
		PassportCountry: m.HolderPassportCountry})
	if err != nil {
		return err
	}
	defer clear(id)
	// A passport gets no blind index (m.HolderIDNumber is empty): the ID
	// numbers' index keeps digits only, and would lose a passport's letters.
	a.HolderIDRef, err = s.vault.Seal(ctx, tx, vault.AccountOwner(a.ID), a.SubjectID, KindIDNumber, id, m.HolderIDNumber)
	return err
}

func manualName(accountType string) string {
	switch accountType {
	case TypeSavings:
		return "Savings account"
	case TypeCheque:
		return "Cheque account"
	case TypeTransmission:
		return "Transmission account"
	}
	return "Checking account"
}

// duplicate returns the id of the subject's live manual account with the
// same numbers, or "". The blind index finds candidates without opening
// anything; a South African candidate is the same account when its bank is
// (bank_id is in the clear), a US one when its routing number is, which
// only the sealed record holds, so only those candidates (almost always
// none) are opened.
func (s *Service) duplicate(ctx context.Context, tx pgx.Tx, subjectID string, m ManualAccount) (string, error) {
	found, err := s.vault.FindByBlindIndex(ctx, tx, accountnumber.Kind, m.AccountNumber)
	if err != nil {
		return "", err
	}
	for _, c := range found {
		if c.SubjectID != subjectID {
			continue
		}
		id, err := s.accounts.FindManual(ctx, tx, subjectID, c.Ref, m.Country, m.BankID)
		if err != nil {
			return "", err
		}
		if id == "" {
			continue
		}
		if m.Country == CountryZA {
			return id, nil
		}
		same, err := s.sameRouting(ctx, tx, id, c.Ref, m.RoutingNumber)
		if err != nil {
			return "", err
		}
		if same {
			return id, nil
		}
	}
	return "", nil
}

func (s *Service) sameRouting(ctx context.Context, tx pgx.Tx, accountID, ref, routing string) (bool, error) {
	cred, err := s.vault.OpenOwnedIn(ctx, tx, vault.AccountOwner(accountID), ref)
	if err != nil {
		return false, err
	}
	defer cred.Zero()
	var n sealedNumbers
	if err := json.Unmarshal(cred.Secret, &n); err != nil {
		return false, kluis.Errorf(kluis.EInternal, "internal error")
	}
	defer func() { n = sealedNumbers{} }()
	return n.RoutingNumber == routing, nil
}
