package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/za"
)

// bankJSON is one bank of GET /v1/banks.
type bankJSON struct {
	ID                  string `json:"id"`
	Name                string `json:"name"`
	UniversalBranchCode string `json:"universal_branch_code"`
}

// listBanks is GET /v1/banks?country=ZA: the South African banks a manual
// account may name (bank_id). Only ZA has a list: a US manual account names
// its bank by routing number, so country=US is refused like any other
// country rather than answered with an empty list an app could mistake for
// "no banks".
func (d *Deps) listBanks(c echo.Context) error {
	if c.QueryParam("country") != "ZA" {
		return kluis.Errorf(kluis.EInvalid, "country is required and must be ZA: kluis lists banks only for South African manual accounts").
			With("field", "country")
	}
	banks := za.Banks()
	out := make([]bankJSON, len(banks))
	for i, b := range banks {
		out[i] = bankJSON{ID: b.ID, Name: b.Name, UniversalBranchCode: b.UniversalBranchCode}
	}
	return c.JSON(http.StatusOK, struct {
		Banks []bankJSON `json:"banks"`
	}{out})
}
