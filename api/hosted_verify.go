package api

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/hosted"
	"github.com/kluis-dev/kluis/verification"
)

// The hosted verification page: a micro-deposit (or bank) verification's
// hosted_verify_url opens it; the user enters the two amounts or the code,
// sees the attempts left, and the verified, locked and expired states.

// MethodBankAccountVerification is the bank account verification (BAV)
// method's name in api/openapi.yaml. Its page shows the holder's details the bank is
// asked about; the details come from holderDetails once the BAV method is
// in verification (until then no verification has the method).
const MethodBankAccountVerification = "bank_account_verification"

// holderDetails is the seam for a BAV's holder details (the name and the
// masked ID number the bank is asked to confirm, and what it confirmed).
// nil until verification offers BAV; a BAV page then shows its status only.
var holderDetails func(c echo.Context, d *Deps, v verification.Verification) []holderField

// hostedVerifyMethod says whether a verification of method has a page:
// methods whose answer the user gives (micro-deposits) or whose details
// the user should see (BAV).
func hostedVerifyMethod(method string) bool {
	return method == verification.MethodMicroDeposits || method == MethodBankAccountVerification
}

// verifyURL is a verification's hosted_verify_url ("" when it has none:
// no hosted pages, another method, or a verification that is finished).
func (d *Deps) verifyURL(c echo.Context, v verification.Verification) (string, error) {
	if d.Hosted == nil || !hostedVerifyMethod(v.Method) || !v.Status.Open() {
		return "", nil
	}
	return d.hostedURL(c, hosted.PurposeVerify, v.ID, v.SubjectID, time.Until(v.ExpiresAt))
}

// openVerifyPage is GET /verify/{id}?token=….
func (d *Deps) openVerifyPage(c echo.Context) error {
	st, err := d.pageOrigin(c.QueryParams())
	if err != nil {
		return d.refusedPage(c, err)
	}
	p, form, err := d.Hosted.Open(c.Request().Context(), hosted.PurposeVerify, c.Param("id"), c.QueryParam("token"), st)
	if err != nil {
		return d.refusedPage(c, err)
	}
	sub, err := d.pageSubject(c, p)
	if err != nil {
		return d.refusedPage(c, err)
	}
	v, err := d.Verification.Get(c.Request().Context(), sub, p.ObjectID)
	if err != nil {
		return d.refusedPage(c, err)
	}
	return d.renderVerify(c, p, form, v, "", "OPEN", http.StatusOK)
}

// postVerifyPage is POST /verify/{id}: the user's answer, taken once.
func (d *Deps) postVerifyPage(c echo.Context) error {
	if err := d.sameOrigin(c); err != nil {
		return d.refusedPage(c, err)
	}
	ctx := c.Request().Context()
	p, form, err := d.Hosted.Take(ctx, hosted.PurposeVerify, c.Param("id"), c.FormValue("form_token"))
	if err != nil {
		return d.refusedPage(c, err)
	}
	sub, err := d.pageSubject(c, p)
	if err != nil {
		return d.refusedPage(c, err)
	}
	v, err := d.Verification.Get(ctx, sub, p.ObjectID)
	if err != nil {
		return d.refusedPage(c, err)
	}
	if v.Status != verification.StatusPosted || c.FormValue("action") != "confirm" {
		return d.renderVerify(c, p, form, v, "", "", http.StatusOK)
	}
	ans, problem := pageAnswer(c, v.AnswerKind)
	if problem != "" {
		return d.renderVerify(c, p, form, v, problem, "ERROR", http.StatusUnprocessableEntity)
	}
	got, err := d.Verification.Confirm(ctx, audit.User(sub, requestID(c)), v.ID, ans)
	switch kluis.ErrorCode(err) {
	case "":
		return d.renderVerify(c, p, form, got, "", "VERIFIED", http.StatusOK)
	case verification.CodeMismatch, kluis.EConflict:
		if v, err = d.Verification.Get(ctx, sub, p.ObjectID); err != nil {
			return d.refusedPage(c, err)
		}
		msg := "That does not match the deposits. Check your statement and try again."
		if v.AnswerKind == verification.AnswerCode {
			msg = "That code does not match. Check your statement and try again."
		}
		if v.Status != verification.StatusPosted {
			msg = ""
		}
		return d.renderVerify(c, p, form, v, msg, "ERROR", http.StatusUnprocessableEntity)
	case kluis.EInvalid:
		return d.renderVerify(c, p, form, v, "Enter the answer as it appears on your statement.", "ERROR", http.StatusUnprocessableEntity)
	}
	return d.refusedPage(c, err)
}

// pageAnswer reads the form's answer: the two amounts in cents, or the
// code. A problem is said in words for the page.
func pageAnswer(c echo.Context, kind string) (verification.Answer, string) {
	if kind == verification.AnswerCode {
		code := strings.TrimSpace(c.FormValue("code"))
		if code == "" || len(code) > 32 {
			return verification.Answer{}, "Enter the code from your statement."
		}
		return verification.Answer{Code: code}, ""
	}
	var amounts []int
	for _, f := range []string{"amount1", "amount2"} {
		n, err := strconv.Atoi(strings.TrimSpace(c.FormValue(f)))
		if err != nil || n < 1 || n > 999 {
			return verification.Answer{}, "Enter both deposits in cents, as whole numbers (for example 32)."
		}
		amounts = append(amounts, n)
	}
	return verification.Answer{Amounts: amounts}, ""
}

// renderVerify renders the verification page for v's state.
func (d *Deps) renderVerify(c echo.Context, p hosted.Page, form string, v verification.Verification, problem, event string, status int) error {
	view := pageView{Origin: p.State.Origin, Mode: p.State.Mode, Action: "/verify/" + v.ID, Error: problem, Event: event}
	switch v.Status {
	case verification.StatusPosted:
		view.Title, view.FormToken, view.Attempts = "Verify your account", form, v.AttemptsRemaining
		view.Code = v.AnswerKind == verification.AnswerCode
		view.Message = "We sent two small deposits to your account. Enter them as they appear on your statement."
		if view.Code {
			view.Message = "We sent a small deposit with a code in its description. Enter the code from your statement."
		}
	case verification.StatusPending, verification.StatusSent:
		view.Title = "Deposits on their way"
		view.Message = "The deposits have not reached your account yet. They usually take one to two business days; come back then."
	case verification.StatusVerified:
		view.Title, view.Message = "Account verified", "Your account is verified. You can go back to the app."
	case verification.StatusFailed:
		view.Title = "Verification locked"
		view.Message = "No attempts are left, so this verification is locked. Go back to the app to see what you can do next."
	case verification.StatusExpired:
		view.Title, view.Message = "Verification expired", "This verification expired before it was finished. Go back to the app to start again."
	default:
		view.Title, view.Message = "Verification ended", "This verification has ended ("+string(v.Status)+"). Go back to the app."
	}
	if v.Method == MethodBankAccountVerification && holderDetails != nil {
		view.Holder = holderDetails(c, d, v)
	}
	return d.render(c, status, "verify", view)
}
