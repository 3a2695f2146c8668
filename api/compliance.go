package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis/compliance"
)

// verifyAudit walks the audit chain for compliance staff and records that it
// did, with the result.
func (d *Deps) verifyAudit(c echo.Context) error {
	ctx := c.Request().Context()
	res, err := compliance.Verify(ctx, d.DB)
	if err != nil {
		return err
	}
	details := map[string]any{"ok": res.OK, "entries": res.Entries, "unsealed": res.Unsealed}
	if res.FirstBadSeq != nil {
		details["first_bad_seq"] = *res.FirstBadSeq
	}
	err = d.Auditor.Record(ctx, compliance.Entry{
		ActorKind: compliance.ActorStaff, Actor: StaffID(c), Action: "audit.verify",
		Outcome: compliance.OutcomeSuccess, RequestID: requestID(c), Details: details,
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, res)
}
