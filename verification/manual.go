package verification

import (
	"context"
	"encoding/json"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/vault"
)

// Account types of manual entry (accounts.subtype; type is depository).
const (
	TypeChecking = "checking"
	TypeSavings  = "savings"
)

// MaxHolderNameLen bounds the holder's name, in characters.
const MaxHolderNameLen = 128

// ManualAccount is an account entered by hand. Every field but AccountType
// is a secret or personal data: it is sealed in the vault, never stored or
// logged in the clear, and printing it shows none of it.
type ManualAccount struct {
	AccountNumber string
	RoutingNumber string
	AccountType   string
	HolderName    string
}

// String keeps the numbers and the name out of %v.
func (m ManualAccount) String() string {
	return "ManualAccount{AccountType:" + m.AccountType + " [numbers and name redacted]}"
}

// GoString makes %#v as safe as %v.
func (m ManualAccount) GoString() string { return m.String() }

// Validate checks a manual account: the account number 4 to 17 digits, the
// routing number a US ABA routing number (nine digits, a Federal Reserve
// prefix, and the check digit), the type checking or savings, the holder's
// name present, printable and at most MaxHolderNameLen characters. Its
// messages never quote the input.
func (m ManualAccount) Validate() error {
	if !digits(m.AccountNumber, 4, 17) {
		return kluis.Errorf(kluis.EInvalid, "account_number must be 4 to 17 digits")
	}
	if !ValidRoutingNumber(m.RoutingNumber) {
		return kluis.Errorf(kluis.EInvalid, "routing_number is not a valid US ABA routing number")
	}
	if m.AccountType != TypeChecking && m.AccountType != TypeSavings {
		return kluis.Errorf(kluis.EInvalid, "account_type must be checking or savings")
	}
	name := strings.TrimSpace(m.HolderName)
	if name == "" || !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxHolderNameLen {
		return kluis.Errorf(kluis.EInvalid, "holder_name is required: at most %d characters", MaxHolderNameLen)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return kluis.Errorf(kluis.EInvalid, "holder_name must be printable text")
		}
	}
	return nil
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

// sealedNumbers is the secret of an account_number credential. The holder's
// name rides in the same envelope: it is personal data kluis needs only for
// the rail's entry, so it lives nowhere else, leaves only through reveal,
// and goes with the subject's keys on erasure.
type sealedNumbers struct {
	AccountNumber string `json:"account_number"`
	RoutingNumber string `json:"routing_number"`
	HolderName    string `json:"holder_name,omitempty"`
}

// CreateManualAccount stores an account the user entered by hand: numbers
// and name sealed in the vault (with the blind index of the account
// number), the account keeping its mask and the credential's reference, its
// verification status unverified. The same account number and routing
// number entered again by the same subject, while the first is live, is a
// conflict (the error names the existing account): one account, one
// verification.
func (s *Service) CreateManualAccount(ctx context.Context, actor Actor, m ManualAccount) (Account, error) {
	if err := m.Validate(); err != nil {
		return Account{}, err
	}
	m.HolderName = strings.TrimSpace(m.HolderName)
	now := s.now()
	a := Account{ID: kluis.NewID(kluis.PrefixAccount), Mask: m.AccountNumber[len(m.AccountNumber)-4:],
		Type: "depository", Subtype: m.AccountType, Name: manualName(m.AccountType),
		VerificationStatus: AccountUnverified, CreatedAt: now}
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
		secret, err := json.Marshal(sealedNumbers{m.AccountNumber, m.RoutingNumber, m.HolderName})
		if err != nil {
			return err
		}
		defer clear(secret)
		if a.AccountNumberRef, err = s.vault.Seal(ctx, tx, vault.AccountOwner(a.ID), subjectID, vault.KindAccountNumber, secret, m.AccountNumber); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO accounts (id, subject_id, name, mask, type, subtype, verification_status, account_number_ref, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)`,
			a.ID, subjectID, a.Name, a.Mask, a.Type, a.Subtype, a.VerificationStatus, a.AccountNumberRef, now); err != nil {
			return dbErr("insert account", err)
		}
		return s.audit.Append(ctx, tx, compliance.Entry{
			ActorKind: actor.Kind, Actor: actor.Name, Action: "account.created_manual", Target: a.ID,
			Outcome: compliance.OutcomeSuccess, Subject: actor.Name, RequestID: actor.RequestID,
			Details: map[string]any{"account_number_ref": a.AccountNumberRef, "subtype": a.Subtype},
		})
	})
	if err != nil {
		return Account{}, err
	}
	return a, nil
}

func manualName(accountType string) string {
	if accountType == TypeSavings {
		return "Savings account"
	}
	return "Checking account"
}

// duplicate returns the id of the subject's live manual account with the
// same numbers, or "". The blind index finds candidates without opening
// anything; only those (almost always none) are opened to compare the
// routing number.
func (s *Service) duplicate(ctx context.Context, tx pgx.Tx, subjectID string, m ManualAccount) (string, error) {
	found, err := s.vault.FindByBlindIndex(ctx, tx, vault.KindAccountNumber, m.AccountNumber)
	if err != nil {
		return "", err
	}
	for _, c := range found {
		if c.SubjectID != subjectID {
			continue
		}
		var id string
		err := tx.QueryRow(ctx, `SELECT id FROM accounts WHERE account_number_ref = $1 AND subject_id = $2
			AND item_id IS NULL AND removed_at IS NULL`, c.Ref, subjectID).Scan(&id)
		if err == pgx.ErrNoRows {
			continue
		}
		if err != nil {
			return "", dbErr("find duplicate", err)
		}
		same, err := s.sameRouting(ctx, tx, c.Ref, m.RoutingNumber)
		if err != nil {
			return "", err
		}
		if same {
			return id, nil
		}
	}
	return "", nil
}

func (s *Service) sameRouting(ctx context.Context, tx pgx.Tx, ref, routing string) (bool, error) {
	cred, err := s.vault.OpenIn(ctx, tx, ref)
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
