package console

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"
)

// pageData is what every template gets.
type pageData struct {
	Title   string
	Staff   string
	CSRF    string
	Nav     string
	Error   string
	Stale   bool // the last action needs a fresh sign-in (mfa_stale)
	Done    string
	Next    string
	Status  string
	Subject string
	App     string // the subject's app, when kluis serves several

	Erasures []erasureRequest
	Holds    []legalHold
	Entries  []accessEntry
	Verify   map[string]any
}

// statuses are the erasure states the queue filters on, the queue of
// requests waiting for people first.
var statuses = []string{"pending_approval,needs_attention", "approved", "completed", "completed_with_exceptions", "rejected", "cancelled", ""}

// doneMessages are the confirmations after an action, by a fixed code (the
// page never echoes input back).
var doneMessages = map[string]string{
	"requested": "Erasure requested. Another staff member must approve it.",
	"approve":   "Erasure approved.",
	"reject":    "Erasure request rejected.",
	"cancel":    "Erasure request cancelled.",
	"complete":  "Completion with exceptions recorded.",
	"held":      "Legal hold placed.",
	"lifted":    "Legal hold lifted.",
}

func (s *Server) render(c echo.Context, status int, name string, d pageData) error {
	if ss, ok := c.Get("session").(*session); ok && ss != nil {
		d.Staff, d.CSRF = ss.staff, ss.csrf
	}
	if d.Done == "" {
		d.Done = doneMessages[c.QueryParam("done")]
	}
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMETextHTMLCharsetUTF8)
	c.Response().WriteHeader(status)
	return s.pages.ExecuteTemplate(c.Response(), name, d)
}

// failed renders the page again with kluis's answer to an action: its
// message (kluis's messages say nothing secret), and a prompt to sign in
// again when kluis wants a fresher MFA.
func (s *Server) failed(c echo.Context, name string, d pageData, err error) error {
	var ae *apiError
	if !errors.As(err, &ae) {
		return err
	}
	d.Error = ae.Message
	d.Stale = ae.Reason == "mfa_stale"
	status := ae.Status
	if status < 400 || status >= 600 {
		status = http.StatusBadGateway
	}
	return s.render(c, status, name, d)
}

// erasures is the queue: requests by status, with the actions each allows.
func (s *Server) erasures(c echo.Context) error {
	status := c.QueryParam("status")
	if c.QueryParams().Get("status") == "" && !c.QueryParams().Has("status") {
		status = statuses[0]
	}
	d := pageData{Title: "Erasure requests", Nav: "erasures", Status: status}
	list, err := s.api.erasures(c.Request().Context(), sessionOf(c).token, status)
	if err != nil {
		return s.failed(c, "erasures", d, err)
	}
	d.Erasures = list
	return s.render(c, http.StatusOK, "erasures", d)
}

func (s *Server) requestErasure(c echo.Context) error {
	body := map[string]string{"subject_id": strings.TrimSpace(c.FormValue("subject_id")), "reason": c.FormValue("reason")}
	err := s.api.call(c.Request().Context(), sessionOf(c).token, http.MethodPost, "/compliance/v1/erasure-requests"+appQuery(c), body, nil)
	if err != nil {
		return s.failed(c, "erasures", pageData{Title: "Erasure requests", Nav: "erasures", Status: statuses[0]}, err)
	}
	return c.Redirect(http.StatusSeeOther, "/?done=requested")
}

// erasureAction approves, rejects, cancels or completes (with exceptions)
// one request.
func (s *Server) erasureAction(c echo.Context) error {
	action := c.Param("action")
	var body any
	switch action {
	case "approve", "complete":
	case "reject", "cancel":
		body = map[string]string{"reason": c.FormValue("reason")}
	default:
		return echo.NewHTTPError(http.StatusNotFound, "No such action.")
	}
	path := "/compliance/v1/erasure-requests/" + url.PathEscape(c.Param("id")) + "/" + action
	if err := s.api.call(c.Request().Context(), sessionOf(c).token, http.MethodPost, path, body, nil); err != nil {
		return s.failed(c, "erasures", pageData{Title: "Erasure requests", Nav: "erasures", Status: statuses[0]}, err)
	}
	return c.Redirect(http.StatusSeeOther, "/?done="+action)
}

func (s *Server) holds(c echo.Context) error {
	d := pageData{Title: "Legal holds", Nav: "holds"}
	list, err := s.api.holds(c.Request().Context(), sessionOf(c).token)
	if err != nil {
		return s.failed(c, "holds", d, err)
	}
	d.Holds = list
	return s.render(c, http.StatusOK, "holds", d)
}

func (s *Server) placeHold(c echo.Context) error {
	body := map[string]string{"subject_id": strings.TrimSpace(c.FormValue("subject_id")), "reason": c.FormValue("reason")}
	if err := s.api.call(c.Request().Context(), sessionOf(c).token, http.MethodPost, "/compliance/v1/legal-holds"+appQuery(c), body, nil); err != nil {
		return s.failed(c, "holds", pageData{Title: "Legal holds", Nav: "holds"}, err)
	}
	return c.Redirect(http.StatusSeeOther, "/holds?done=held")
}

func (s *Server) liftHold(c echo.Context) error {
	path := "/compliance/v1/legal-holds/" + url.PathEscape(c.Param("id"))
	if err := s.api.call(c.Request().Context(), sessionOf(c).token, http.MethodDelete, path, nil, nil); err != nil {
		return s.failed(c, "holds", pageData{Title: "Legal holds", Nav: "holds"}, err)
	}
	return c.Redirect(http.StatusSeeOther, "/holds?done=lifted")
}

// subject shows a subject's access report (?id=external id).
func (s *Server) subject(c echo.Context) error {
	d := pageData{Title: "A subject", Nav: "subjects", Subject: strings.TrimSpace(c.QueryParam("id")), App: strings.TrimSpace(c.QueryParam("app"))}
	if d.Subject == "" {
		return s.render(c, http.StatusOK, "subjects", d)
	}
	entries, err := s.api.accessReport(c.Request().Context(), sessionOf(c).token, d.Subject, d.App)
	if err != nil {
		return s.failed(c, "subjects", d, err)
	}
	d.Entries = entries
	return s.render(c, http.StatusOK, "subjects", d)
}

// export streams the subject's complete export, encrypted by kluis to the
// age recipient the staff member gave, as a download. The console never
// sees it in the clear.
func (s *Server) export(c echo.Context) error {
	subject := strings.TrimSpace(c.FormValue("subject_id"))
	d := pageData{Title: "A subject", Nav: "subjects", Subject: subject, App: strings.TrimSpace(c.FormValue("app"))}
	body := map[string]string{"recipient": strings.TrimSpace(c.FormValue("recipient"))}
	resp, err := s.api.do(c.Request().Context(), sessionOf(c).token, http.MethodPost,
		"/compliance/v1/subjects/"+url.PathEscape(subject)+"/export"+appQuery(c), body)
	if err != nil {
		return s.failed(c, "subjects", d, err)
	}
	defer resp.Body.Close()
	h := c.Response().Header()
	h.Set("Content-Disposition", `attachment; filename="kluis-subject-export.tar.age"`)
	if v := resp.Header.Get("Repr-Digest"); v != "" {
		h.Set("Repr-Digest", v)
	}
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMEOctetStream)
	c.Response().WriteHeader(http.StatusOK)
	_, err = io.Copy(c.Response(), io.LimitReader(resp.Body, 100<<20))
	return err
}

func (s *Server) audit(c echo.Context) error {
	return s.render(c, http.StatusOK, "audit", pageData{Title: "Audit log", Nav: "audit"})
}

// verifyAudit walks the chain, against a signed head when one is pasted.
func (s *Server) verifyAudit(c echo.Context) error {
	d := pageData{Title: "Audit log", Nav: "audit"}
	var body any
	if head := strings.TrimSpace(c.FormValue("head")); head != "" {
		var h map[string]any
		if err := jsonUnmarshal(head, &h); err != nil {
			d.Error = "The head must be the JSON line `kluis audit head` prints."
			return s.render(c, http.StatusBadRequest, "audit", d)
		}
		body = map[string]any{"head": h}
	}
	var out map[string]any
	if err := s.api.call(c.Request().Context(), sessionOf(c).token, http.MethodPost, "/compliance/v1/audit/verify", body, &out); err != nil {
		return s.failed(c, "audit", d, err)
	}
	d.Verify = out
	return s.render(c, http.StatusOK, "audit", d)
}

// appQuery is "?app=…" when the form or query names the subject's app: with
// several apps configured, kluis needs it on routes that name a subject
// (the same user id in two apps is two people); with one, it is left out.
func appQuery(c echo.Context) string {
	app := strings.TrimSpace(c.FormValue("app"))
	if app == "" {
		return ""
	}
	return "?" + url.Values{"app": {app}}.Encode()
}
