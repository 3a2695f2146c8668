package api

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/compliance"
)

// reasonRequest is the body of a rejection or a cancellation.
type reasonRequest struct {
	Reason string `json:"reason"`
}

// rejectErasure refuses a pending request; the requester cannot (403).
func (d *Deps) rejectErasure(c echo.Context) error {
	var req reasonRequest
	if err := DecodeJSON(c, &req); err != nil {
		return err
	}
	r, err := d.Compliance.RejectErasure(c.Request().Context(), staffOf(c), c.Param("id"), req.Reason)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

// cancelErasure withdraws a pending request; only its requester may (403).
func (d *Deps) cancelErasure(c echo.Context) error {
	var req reasonRequest
	if err := DecodeJSON(c, &req); err != nil {
		return err
	}
	r, err := d.Compliance.CancelErasure(c.Request().Context(), staffOf(c), c.Param("id"), req.Reason)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

// completeErasure is one of the two staff members' calls that complete a
// needs_attention erasure with exceptions: the first acknowledges (200,
// still needs_attention), another's completes it (200,
// completed_with_exceptions with the receipt).
func (d *Deps) completeErasure(c echo.Context) error {
	r, err := d.Compliance.CompleteWithExceptions(c.Request().Context(), staffOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

// listErasures lists erasure requests newest first. Filters: status (one
// or more, comma-separated), requested_by (a staff id), requested_before
// (RFC 3339: requests made before then, the way to ask for old ones).
func (d *Deps) listErasures(c echo.Context) error {
	if err := onlyQuery(c, "status", "requested_by", "requested_before"); err != nil {
		return err
	}
	limit, err := pageLimit(c)
	if err != nil {
		return err
	}
	var f compliance.ErasureFilter
	if raw := c.QueryParam("status"); raw != "" {
		for _, s := range strings.Split(raw, ",") {
			if !slices.Contains(compliance.ErasureStatuses, s) {
				return kluis.Errorf(kluis.EInvalid, "status must be one or more of %s", strings.Join(compliance.ErasureStatuses, ", "))
			}
			f.Statuses = append(f.Statuses, s)
		}
	}
	if f.RequestedBy = c.QueryParam("requested_by"); len(f.RequestedBy) > 255 {
		return kluis.Errorf(kluis.EInvalid, "requested_by is at most 255 characters")
	}
	if raw := c.QueryParam("requested_before"); raw != "" {
		t, err := time.Parse(time.RFC3339Nano, raw)
		if err != nil {
			return kluis.Errorf(kluis.EInvalid, "requested_before must be an RFC 3339 time")
		}
		f.RequestedBefore = &t
	}
	var after compliance.Keyset
	has, err := d.openCursor(c, &after)
	if err != nil {
		return err
	}
	list, next, err := d.Compliance.ListErasures(c.Request().Context(), f, limit, keysetOrNil(has, &after))
	if err != nil {
		return err
	}
	if list == nil {
		list = []compliance.ErasureRequest{}
	}
	return d.listAnswer(c, "erasure_requests", list, anyKeyset(next))
}

// listHolds lists legal holds newest first: status active (the default),
// lifted or all.
func (d *Deps) listHolds(c echo.Context) error {
	if err := onlyQuery(c, "status"); err != nil {
		return err
	}
	limit, err := pageLimit(c)
	if err != nil {
		return err
	}
	which := c.QueryParam("status")
	switch which {
	case "":
		which = compliance.HoldsActive
	case compliance.HoldsActive, compliance.HoldsLifted, compliance.HoldsAll:
	default:
		return kluis.Errorf(kluis.EInvalid, "status must be active, lifted or all")
	}
	var after compliance.Keyset
	has, err := d.openCursor(c, &after)
	if err != nil {
		return err
	}
	holds, next, err := d.Compliance.ListHolds(c.Request().Context(), which, limit, keysetOrNil(has, &after))
	if err != nil {
		return err
	}
	if holds == nil {
		holds = []compliance.LegalHold{}
	}
	return d.listAnswer(c, "legal_holds", holds, anyKeyset(next))
}

func keysetOrNil(has bool, k *compliance.Keyset) *compliance.Keyset {
	if !has {
		return nil
	}
	return k
}

// anyKeyset keeps a nil position nil as an interface (no next_cursor).
func anyKeyset(k *compliance.Keyset) any {
	if k == nil {
		return nil
	}
	return k
}

// auditPosition is the cursor of an access report: the audit sequence
// number of the last entry shown.
type auditPosition struct {
	Seq int64 `json:"s"`
}

// subjectAccessReport is a subject's access report for compliance staff
// (`id` is the external id); looking is audited.
func (d *Deps) subjectAccessReport(c echo.Context) error {
	id := c.Param("id")
	if id == "" || len(id) > 255 {
		return kluis.Errorf(kluis.ENotFound, "not found")
	}
	return d.accessReport(c, func(limit int, before int64) ([]compliance.AccessEntry, int64, error) {
		return d.Compliance.AccessReport(c.Request().Context(), staffOf(c), id, limit, before)
	})
}

// ownAccessReport is the user's own access report, with their user token.
func (d *Deps) ownAccessReport(c echo.Context) error {
	return d.accessReport(c, func(limit int, before int64) ([]compliance.AccessEntry, int64, error) {
		return d.Compliance.OwnAccessReport(c.Request().Context(), Subject(c), limit, before)
	})
}

func (d *Deps) accessReport(c echo.Context, report func(limit int, before int64) ([]compliance.AccessEntry, int64, error)) error {
	if err := onlyQuery(c); err != nil {
		return err
	}
	limit, err := pageLimit(c)
	if err != nil {
		return err
	}
	var pos auditPosition
	if _, err := d.openCursor(c, &pos); err != nil {
		return err
	}
	entries, next, err := report(limit, pos.Seq)
	if err != nil {
		return err
	}
	if entries == nil {
		entries = []compliance.AccessEntry{}
	}
	var nextPos any
	if next > 0 {
		nextPos = auditPosition{Seq: next}
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return d.listAnswer(c, "entries", entries, nextPos)
}
