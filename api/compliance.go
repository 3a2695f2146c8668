package api

import (
	"bytes"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
)

// verifyAuditRequest is the optional body: a head anchored outside the
// database that the chain must still extend.
type verifyAuditRequest struct {
	Head *audit.Head `json:"head"`
}

// verifyAudit walks the audit chain for compliance staff and records that it
// did, with the result. With {"head": …} it also checks that the chain
// extends that signed head.
func (d *Deps) verifyAudit(c echo.Context) error {
	ctx := c.Request().Context()
	body, err := readBody(c)
	if err != nil {
		return err
	}
	opts := audit.VerifyOptions{SealInterval: d.AuditSealInterval, Key: d.AuditHeads}
	if opts.SealInterval <= 0 {
		opts.SealInterval = audit.DefaultSealInterval
	}
	if len(bytes.TrimSpace(body)) > 0 {
		var req verifyAuditRequest
		if err := DecodeStrict(body, &req); err != nil {
			return err
		}
		if req.Head != nil {
			if err := req.Head.Validate(); err != nil {
				return err
			}
			if d.AuditHeads == nil {
				return kluis.Errorf(kluis.EUnavailable, "the audit-head key is not loaded")
			}
			opts.Head = req.Head
		}
	}
	res, err := audit.VerifyWith(ctx, d.DB, opts)
	if err != nil {
		return err
	}
	details := map[string]any{"ok": res.OK, "entries": res.Entries, "unsealed": res.Unsealed}
	if res.FirstBadSeq != nil {
		details["first_bad_seq"] = *res.FirstBadSeq
	}
	if res.Problem != "" {
		details["problem"] = res.Problem
	}
	if opts.Head != nil {
		details["head_pos"] = opts.Head.Pos
	}
	err = d.Auditor.Record(ctx, audit.Entry{
		ActorKind: audit.ActorStaff, Actor: StaffID(c), Action: "audit.verify",
		Outcome: audit.OutcomeSuccess, RequestID: requestID(c), Details: details,
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, res)
}
