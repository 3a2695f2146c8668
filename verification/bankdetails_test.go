package verification_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
)

// The BAV seam opens what a bank account verification will send: the
// account's sealed bank, branch and number and the holder's sealed ID
// number, and refuses an account whose sealed bank is not its own.
func TestBankDetailsOfASouthAfricanAccountOpenForVerification(t *testing.T) {
	var svc *verification.Service
	env := apitest.Start(t, func(d *api.Deps) {
		var err error
		svc, err = verification.New(verification.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Accounts: banklink.NewAccountStore(d.DB),
			Keys: d.Pseudonyms.(*vault.SystemKeys), Logger: d.Logger})
		if err != nil {
			t.Fatal(err)
		}
		d.Verification = svc
	})
	ctx := context.Background()
	actor := audit.User("user_za_bav", "req_1")
	za, err := svc.CreateManualAccount(ctx, actor, verification.ManualAccount{Country: "ZA", BankID: "za_fnb",
		AccountNumber: "62012345678", AccountType: "cheque", HolderName: " Sipho Mokoena ", HolderIDNumber: "8001015009087"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := svc.OpenBankDetails(ctx, za.SubjectID, za.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := verification.BankDetails{BankID: "za_fnb", BranchCode: "250655", AccountNumber: "62012345678",
		AccountType: "cheque", HolderName: "Sipho Mokoena", IDNumber: "8001015009087"}
	if got != want {
		t.Fatalf("details = %#v", got) // prints no secret
	}
	if s := fmt.Sprintf("%v %+v %#v", got, got, got); strings.Contains(s, "62012345678") || strings.Contains(s, "8001015009087") || strings.Contains(s, "Sipho") {
		t.Fatalf("BankDetails prints a secret: %s", s)
	}

	us, err := svc.CreateManualAccount(ctx, actor, verification.ManualAccount{AccountNumber: "0001234567",
		RoutingNumber: "021000021", AccountType: "checking", HolderName: "A"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.OpenBankDetails(ctx, us.SubjectID, us.ID); kluis.ErrorCode(err) != kluis.EInvalid {
		t.Fatalf("a US account's details: %v", err)
	}
	// A row pointed at another account's sealed record is refused, not
	// answered with the other account's details.
	other, err := svc.CreateManualAccount(ctx, actor, verification.ManualAccount{Country: "ZA", BankID: "za_capitec",
		AccountNumber: "1234567890", AccountType: "savings", HolderName: "B"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.DB.Pool.Exec(ctx, `UPDATE accounts SET account_number_ref = (SELECT account_number_ref FROM accounts WHERE id = $1) WHERE id = $2`,
		za.ID, other.ID); err != nil {
		t.Fatal(err)
	}
	// The record is bound to its account (envelope v2): the pointer is
	// caught as an integrity failure before its bank is even compared.
	if _, err := svc.OpenBankDetails(ctx, other.SubjectID, other.ID); kluis.ErrorCode(err) != vault.EIntegrity {
		t.Fatalf("a pointer to another bank's record: %v", err)
	}
	// So is a holder_id_ref pointed at another account's ID number.
	third, err := svc.CreateManualAccount(ctx, actor, verification.ManualAccount{Country: "ZA", BankID: "za_absa",
		AccountNumber: "4012345678", AccountType: "savings", HolderName: "C", HolderIDNumber: "8001015009087"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.DB.Pool.Exec(ctx, `UPDATE accounts SET holder_id_ref = (SELECT holder_id_ref FROM accounts WHERE id = $1) WHERE id = $2`,
		third.ID, za.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.OpenBankDetails(ctx, za.SubjectID, za.ID); kluis.ErrorCode(err) != vault.EIntegrity {
		t.Fatalf("a pointer to another account's ID number: %v", err)
	}
}
