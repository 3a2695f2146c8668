package api

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/verification"
)

// A wrong answer and instant verification where the institution cannot
// give it are the caller's to fix (422); a verification that cannot take
// an answer in its state is a conflict (409, the generic code).
// ManualAccountRequest is the body of POST /v1/accounts: the US form
// (routing_number) or, with country ZA, the South African one (bank_id,
// branch_code, holder_id_number or holder_passport_number with
// holder_passport_country). Its fields are secrets and personal data:
// nothing here is logged or echoed back.
type ManualAccountRequest struct {
	Country               string `json:"country"`
	AccountNumber         string `json:"account_number"`
	RoutingNumber         string `json:"routing_number"`
	BankID                string `json:"bank_id"`
	BranchCode            string `json:"branch_code"`
	AccountType           string `json:"account_type"`
	HolderName            string `json:"holder_name"`
	HolderIDNumber        string `json:"holder_id_number"`
	HolderPassportNumber  string `json:"holder_passport_number"`
	HolderPassportCountry string `json:"holder_passport_country"`
}

// String keeps the numbers and name out of %v.
func (ManualAccountRequest) String() string { return "ManualAccountRequest{[redacted]}" }

// StartVerificationRequest is the body of POST /v1/accounts/{id}/verifications.
type StartVerificationRequest struct {
	Method string `json:"method"`
}

// ConfirmRequest is the body of POST /v1/verifications/{id}/confirm: the
// two amounts in cents (either order), or the code.
type ConfirmRequest struct {
	Amounts []int   `json:"amounts"`
	Code    *string `json:"code"`
}

// String keeps the answer out of %v.
func (ConfirmRequest) String() string { return "ConfirmRequest{[redacted]}" }

// DecodeManualAccount decodes and validates a manual account body. It is
// the whole of the handler's input checking, exported for the fuzz test.
func DecodeManualAccount(body []byte) (verification.ManualAccount, error) {
	var req ManualAccountRequest
	if err := DecodeStrict(body, &req); err != nil {
		return verification.ManualAccount{}, err
	}
	m := verification.ManualAccount{Country: req.Country, AccountNumber: req.AccountNumber,
		RoutingNumber: req.RoutingNumber, BankID: req.BankID, BranchCode: req.BranchCode,
		AccountType: req.AccountType, HolderName: req.HolderName, HolderIDNumber: req.HolderIDNumber,
		HolderPassportNumber: req.HolderPassportNumber, HolderPassportCountry: req.HolderPassportCountry}
	return m, m.Validate()
}

// DecodeConfirm decodes a confirm body: exactly one of amounts and code.
// Exported for the fuzz test.
func DecodeConfirm(body []byte) (verification.Answer, error) {
	var req ConfirmRequest
	if err := DecodeStrict(body, &req); err != nil {
		return verification.Answer{}, err
	}
	switch {
	case req.Amounts != nil && req.Code != nil, req.Amounts == nil && req.Code == nil:
		return verification.Answer{}, kluis.Errorf(kluis.EInvalid, "give either amounts or code")
	case req.Code != nil:
		if *req.Code == "" {
			return verification.Answer{}, kluis.Errorf(kluis.EInvalid, "code must not be empty")
		}
		return verification.Answer{Code: *req.Code}, nil
	}
	if len(req.Amounts) != 2 && len(req.Amounts) != 1 {
		return verification.Answer{}, kluis.Errorf(kluis.EInvalid, "amounts must be the deposits, in cents")
	}
	return verification.Answer{Amounts: req.Amounts}, nil
}

// verificationJSON is the contract's Verification (api/openapi.yaml): never the amounts or code.
type verificationJSON struct {
	ID                string    `json:"id"`
	AccountID         string    `json:"account_id"`
	Method            string    `json:"method"`
	RequestedMethod   string    `json:"requested_method"`
	AnswerKind        string    `json:"answer_kind,omitempty"`
	Status            string    `json:"status"`
	AttemptsRemaining int       `json:"attempts_remaining"`
	ExpiresAt         time.Time `json:"expires_at"`
	CreatedAt         time.Time `json:"created_at"`
	// Checks: a bank account verification's answer, once the bank gave it.
	Checks *verification.Checks `json:"checks,omitempty"`
	// ProviderChecked: the bank provider sent the micro-deposits and
	// checks them (Plaid's); the user confirms in its Link, in update mode.
	ProviderChecked bool `json:"provider_checked,omitempty"`
	// HostedVerifyURL is kluis's page for the user's answer, with a fresh
	// short-lived page token (micro-deposit and bank verifications that
	// are still open; docs/HOSTED.md).
	HostedVerifyURL string `json:"hosted_verify_url,omitempty"`
}

func verificationView(v verification.Verification) verificationJSON {
	return verificationJSON{ID: v.ID, AccountID: v.AccountID, Method: v.Method, RequestedMethod: v.RequestedMethod,
		AnswerKind: v.AnswerKind, Status: string(v.Status), AttemptsRemaining: v.AttemptsRemaining,
		ExpiresAt: v.ExpiresAt.UTC(), CreatedAt: v.CreatedAt.UTC(), ProviderChecked: v.ProviderChecked}
}

// verificationOut is a verification's answer with its hosted_verify_url.
func (d *Deps) verificationOut(c echo.Context, v verification.Verification) (verificationJSON, error) {
	out := verificationView(v)
	var err error
	out.HostedVerifyURL, err = d.verifyURL(c, v)
	return out, err
}

func (d *Deps) verificationActor(c echo.Context) audit.Actor {
	return audit.User(Subject(c), requestID(c))
}

// createManualAccount is POST /v1/accounts.
func (d *Deps) createManualAccount(c echo.Context) error {
	body, err := readSecretBody(c)
	if err != nil {
		return err
	}
	defer clear(body)
	m, err := DecodeManualAccount(body)
	if err != nil {
		return err
	}
	a, err := d.Verification.CreateManualAccount(c.Request().Context(), d.verificationActor(c), m)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, accountJSON{ID: a.ID, Name: a.Name, Mask: a.Mask, Type: a.Type,
		Subtype: a.Subtype, VerificationStatus: a.VerificationStatus, Status: "active"})
}

// startVerification is POST /v1/accounts/{id}/verifications.
func (d *Deps) startVerification(c echo.Context) error {
	var req StartVerificationRequest
	if err := DecodeJSON(c, &req); err != nil {
		return err
	}
	v, err := d.Verification.Start(c.Request().Context(), d.verificationActor(c), c.Param("id"), req.Method)
	if err != nil {
		return err
	}
	return d.writeVerification(c, http.StatusCreated, v)
}

// getVerification is GET /v1/verifications/{id}.
func (d *Deps) getVerification(c echo.Context) error {
	v, err := d.Verification.Get(c.Request().Context(), Subject(c), c.Param("id"))
	if err != nil {
		return err
	}
	return d.writeVerification(c, http.StatusOK, v)
}

// confirmVerification is POST /v1/verifications/{id}/confirm.
func (d *Deps) confirmVerification(c echo.Context) error {
	body, err := readSecretBody(c)
	if err != nil {
		return err
	}
	defer clear(body)
	ans, err := DecodeConfirm(body)
	if err != nil {
		return err
	}
	v, err := d.Verification.Confirm(c.Request().Context(), d.verificationActor(c), c.Param("id"), ans)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, verificationView(v))
}

// sandboxDeposits is GET /v1/sandbox/verifications/{id}/deposits: what the
// sandbox bank shows on the user's statement. The one route that answers
// with amounts, and it exists only with the sandbox rail.
func (d *Deps) sandboxDeposits(c echo.Context) error {
	ctx := c.Request().Context()
	v, err := d.Verification.Get(ctx, Subject(c), c.Param("id"))
	if err != nil {
		return err
	}
	if v.RailRef == "" {
		return kluis.Errorf(kluis.EConflict, "no deposits were sent for this verification")
	}
	dep, err := d.Verification.Sandbox().Posted(ctx, v.RailRef)
	if err != nil {
		return err
	}
	out := struct {
		Amounts []int  `json:"amounts"`
		Code    string `json:"code,omitempty"`
	}{dep.AmountsCents, dep.Code}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, out)
}

// sandboxReturnDeposits is POST /v1/sandbox/verifications/{id}/return: the
// sandbox bank returns the deposits, which the rail reports on its next
// poll.
func (d *Deps) sandboxReturnDeposits(c echo.Context) error {
	ctx := c.Request().Context()
	v, err := d.Verification.Get(ctx, Subject(c), c.Param("id"))
	if err != nil {
		return err
	}
	if v.RailRef == "" {
		return kluis.Errorf(kluis.EConflict, "no deposits were sent for this verification")
	}
	if err := d.Verification.Sandbox().Return(ctx, v.RailRef); err != nil {
		return err
	}
	return c.NoContent(http.StatusAccepted)
}

// readSecretBody reads a body that holds secrets, so that the handler can
// zero its copy once done (DecodeJSON keeps none the caller could clear).
func readSecretBody(c echo.Context) ([]byte, error) {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, kluis.Errorf(kluis.ETooLarge, "request body is larger than 1 MiB")
		}
		return nil, kluis.Errorf(kluis.EInvalid, "request body could not be read")
	}
	return body, nil
}
