package api

import (
	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis/verification"
)

// writeVerification answers a Verification, with the bank's checks when it
// is a bank account verification that the bank answered.
func (d *Deps) writeVerification(c echo.Context, status int, v verification.Verification) error {
	out, err := d.verificationOut(c, v)
	if err != nil {
		return err
	}
	if v.Method == verification.MethodBankAccountVerification {
		checks, err := d.Verification.BankChecks(c.Request().Context(), v.ID)
		if err != nil {
			return err
		}
		out.Checks = checks
	}
	return c.JSON(status, out)
}
