package verification

import (
	"context"
	"fmt"
	"log/slog"
)

// Rail is the payment rail that carries micro-deposits (ACH in the US): it
// sends them, and later tells whether they posted to the account or were
// returned. Implementations are idempotent per verification: sending again
// for the same VerificationID replaces a send that kluis believes failed.
//
// Errors: kluis.EUnavailable when the rail cannot be reached (the caller
// retries later), kluis.ENotFound from Status for a reference the rail does
// not know; anything else is internal.
type Rail interface {
	// Name names the rail ("sandbox", "ach-…"), for records.
	Name() string
	// Send starts the deposits and returns the rail's reference for them.
	Send(ctx context.Context, d Deposits) (ref string, err error)
	// Status reports what became of the deposits sent under ref.
	Status(ctx context.Context, ref string) (RailStatus, error)
}

// RailStatus is what a rail knows of sent deposits.
type RailStatus string

// Rail statuses.
const (
	RailInFlight RailStatus = "in_flight"
	RailPosted   RailStatus = "posted"
	RailReturned RailStatus = "returned"
)

// Deposits are the micro-deposits for one verification. AmountsCents and
// Code are secrets: they leave kluis only to the rail, and printing or
// logging Deposits never shows them.
type Deposits struct {
	VerificationID string
	AccountID      string
	// AccountNumberRef is the sealed account and routing numbers (and the
	// holder's name for manual accounts), for a rail that needs them; a
	// real rail's adapter opens it, the sandbox does not need it.
	AccountNumberRef string
	// AmountsCents holds two amounts of 1 to 99 cents, or one with Code.
	AmountsCents []int
	// Code, when set, is the short code the deposit's descriptor carries.
	Code string
}

// String keeps the amounts and the code out of %v.
func (d Deposits) String() string {
	return fmt.Sprintf("Deposits{VerificationID:%s AccountID:%s AccountNumberRef:%s Amounts:[redacted] Code:[redacted]}",
		d.VerificationID, d.AccountID, d.AccountNumberRef)
}

// GoString makes %#v as safe as %v.
func (d Deposits) GoString() string { return d.String() }

// LogValue keeps the amounts and code out of slog output.
func (d Deposits) LogValue() slog.Value {
	return slog.GroupValue(slog.String("verification_id", d.VerificationID), slog.String("account_id", d.AccountID))
}

// SandboxRail is implemented by the sandbox rail only: it plays the bank,
// which shows the user the deposits on a statement, and it can be told to
// return deposits.
type SandboxRail interface {
	Rail
	// Posted returns the deposits sent under ref once they have posted;
	// before that, kluis.EConflict.
	Posted(ctx context.Context, ref string) (Deposits, error)
	// Return makes the deposits under ref come back returned.
	Return(ctx context.Context, ref string) error
}
