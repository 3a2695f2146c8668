package api

import (
	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
)

// ctxFenceAudited marks a request whose subject_erasing refusal is audited
// already.
const ctxFenceAudited = "kluis.fence_audited"

// auditFence records every write that the erasure fence refused (409
// subject_erasing) in the audit log, whichever layer refused it: the
// idempotency layer (its subject lookup) or the feature's own transaction.
// It sits both outside the idempotency layer and inside it (which answers a
// handler's error itself), and audits once. If the entry cannot be written
// the request fails closed with 503.
func (d *Deps) auditFence(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := next(c)
		if kluis.ErrorCode(err) != kluis.ESubjectErasing || c.Get(ctxFenceAudited) != nil {
			return err
		}
		c.Set(ctxFenceAudited, true)
		sub := Subject(c)
		if aerr := d.Auditor.Record(c.Request().Context(), audit.Entry{
			ActorKind: audit.ActorUser, Actor: sub, Action: "subject.write_refused", Target: c.Param("id"),
			Outcome: audit.OutcomeDenied, Subject: sub, RequestID: requestID(c),
			Details: map[string]any{"reason": kluis.ESubjectErasing, "route": routeOf(c), "method": c.Request().Method},
		}); aerr != nil {
			return aerr
		}
		return err
	}
}
