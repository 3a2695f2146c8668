package api

import (
	"encoding/base64"
	"encoding/hex"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/compliance"
)

// subjectRequest is the body of a legal hold or an erasure request:
// subject_id is the subject's external id (the `sub` of their token).
type subjectRequest struct {
	SubjectID string `json:"subject_id"`
	Reason    string `json:"reason"`
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
	return req, d.bindIdempotencySubject(c, req.SubjectID)
}

func (d *Deps) placeHold(c echo.Context) error {
	req, err := d.decodeSubjectRequest(c)
	if err != nil {
		return err
	}
	h, err := d.Compliance.PlaceHold(c.Request().Context(), staffOf(c), req.SubjectID, req.Reason)
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
	r, err := d.Compliance.RequestErasure(c.Request().Context(), staffOf(c), req.SubjectID, req.Reason)
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
	out, err := d.Compliance.ExportSubject(c.Request().Context(), staffOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, out)
}

// opExportArchive is the complete export's route: its answer opens sealed
// records, so, as with reveal, an Idempotency-Key stores the claim only,
// never the archive (answerNotStored).
const opExportArchive = "POST /compliance/v1/subjects/:id/export"

// exportRequest is the body of a complete export: the age recipient
// (public key) the archive is encrypted to.
type exportRequest struct {
	Recipient string `json:"recipient"`
}

// exportArchive answers everything kluis holds on the subject, sealed
// records opened, as an archive encrypted to the requesting staff member's
// age recipient. The digest goes in Repr-Digest (RFC 9530) and in the
// audit entry, which commits first.
func (d *Deps) exportArchive(c echo.Context) error {
	var req exportRequest
	if err := DecodeJSON(c, &req); err != nil {
		return err
	}
	if _, err := compliance.ParseRecipient(req.Recipient); err != nil {
		return err
	}
	out, err := d.Compliance.ExportArchive(c.Request().Context(), staffOf(c), c.Param("id"), req.Recipient)
	if err != nil {
		return err
	}
	sum, _ := hex.DecodeString(out.Digest)
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Disposition", `attachment; filename="kluis-subject-export.tar.age"`)
	h.Set("Repr-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(sum)+":")
	return c.Blob(http.StatusOK, echo.MIMEOctetStream, out.Archive)
}
