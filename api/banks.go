package api

import (
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
//
// The list is short and fixed, but paginated like every list (limit,
// cursor, next_cursor), so that a client reads every list the same way; the
// cursor names the last bank of the page.
func (d *Deps) listBanks(c echo.Context) error {
	if err := onlyQuery(c, "country"); err != nil {
		return err
	}
	if c.QueryParam("country") != "ZA" {
		return kluis.Errorf(kluis.EInvalid, "country is required and must be ZA: kluis lists banks only for South African manual accounts").
			With("field", "country")
	}
	limit, err := pageLimit(c)
	if err != nil {
		return err
	}
	banks, err := d.banksAfter(c)
	if err != nil {
		return err
	}
	var next any
	if len(banks) > limit {
		banks = banks[:limit]
		next = bankPosition{After: banks[limit-1].ID}
	}
	out := make([]bankJSON, len(banks))
	for i, b := range banks {
		out[i] = bankJSON{ID: b.ID, Name: b.Name, UniversalBranchCode: b.UniversalBranchCode}
	}
	return d.listAnswer(c, "banks", out, next)
}

// bankPosition is GET /v1/banks's cursor: the id of the last bank given.
type bankPosition struct {
	After string `json:"after"`
}

// banksAfter is the bank list from the request's cursor on.
func (d *Deps) banksAfter(c echo.Context) ([]za.Bank, error) {
	banks := za.Banks()
	var pos bankPosition
	has, err := d.openCursor(c, &pos)
	if err != nil || !has {
		return banks, err
	}
	for i, b := range banks {
		if b.ID == pos.After {
			return banks[i+1:], nil
		}
	}
	// A bank that left the list since the cursor was made: start again.
	return nil, kluis.Errorf(kluis.EInvalid, "cursor is not valid for this list; start again without it")
}
