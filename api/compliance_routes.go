package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/compliance"
)

func init() {
	RegisterErrorStatus(compliance.ELegalHold, http.StatusConflict)
	internalRoutes = append(internalRoutes, func(d *Deps, _, comp *echo.Group) {
		if d.Compliance == nil {
			return
		}
		comp.POST("/legal-holds", d.placeHold)
		comp.DELETE("/legal-holds/:id", d.liftHold)
		comp.POST("/erasure-requests", d.requestErasure)
		comp.GET("/erasure-requests/:id", d.getErasure)
		comp.POST("/erasure-requests/:id/approve", d.approveErasure)
		comp.GET("/subjects/:id/export", d.exportSubject)
		comp.POST("/events/:id/replay", d.replayEvent)
	})
}

// subjectRequest is the body of a legal hold or an erasure request:
// subject_id is the subject's external id (the `sub` of their token), in
// the app `?app=` names (Deps.subjectKey).
type subjectRequest struct {
	SubjectID string `json:"subject_id"`
	Reason    string `json:"reason"`
	// key is the subject's user key: the app and subject_id.
	key string
}

func staffOf(c echo.Context) compliance.Staff {
	return compliance.Staff{ID: StaffID(c), RequestID: requestID(c)}
}

// decodeSubjectRequest decodes the body and ties the request's stored
// idempotent answer to the subject it names, so that the answer (and its
// fingerprint) goes with the subject's erasure.
func (d *Deps) decodeSubjectRequest(c echo.Context) (subjectRequest, error) {
	var req subjectRequest
	if err := DecodeJSON(c, &req); err != nil {
		return req, err
	}
	if req.SubjectID == "" || len(req.SubjectID) > 255 {
		return req, kluis.Errorf(kluis.EInvalid, "subject_id is required, at most 255 characters")
	}
	key, err := d.subjectKey(c, req.SubjectID)
	if err != nil {
		return req, err
	}
	req.key = key
	return req, d.bindIdempotencySubject(c, key)
}

func (d *Deps) placeHold(c echo.Context) error {
	req, err := d.decodeSubjectRequest(c)
	if err != nil {
		return err
	}
	h, err := d.Compliance.PlaceHold(c.Request().Context(), staffOf(c), req.key, req.Reason)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, h)
}

func (d *Deps) liftHold(c echo.Context) error {
	if err := d.Compliance.LiftHold(c.Request().Context(), staffOf(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (d *Deps) requestErasure(c echo.Context) error {
	req, err := d.decodeSubjectRequest(c)
	if err != nil {
		return err
	}
	r, err := d.Compliance.RequestErasure(c.Request().Context(), staffOf(c), req.key, req.Reason)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, r)
}

func (d *Deps) getErasure(c echo.Context) error {
	r, err := d.Compliance.GetErasure(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

// approveErasure approves and runs the request. A run that stops short (a
// provider down) still answers 200 with status approved: the approval
// stands and the erasure-resume job finishes it.
func (d *Deps) approveErasure(c echo.Context) error {
	r, err := d.Compliance.ApproveErasure(c.Request().Context(), staffOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

func (d *Deps) exportSubject(c echo.Context) error {
	key, err := d.subjectKey(c, c.Param("id"))
	if err != nil {
		return err
	}
	out, err := d.Compliance.ExportSubject(c.Request().Context(), staffOf(c), key)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, out)
}
