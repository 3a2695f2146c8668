package api

import (
	"net/http"

	"github.com/kluis-dev/kluis/banklink"
)

// registerProviderErrorStatuses adds the statuses of provider errors that
// issue 14 mapped (docs/PLAID.md): what the user did not share is theirs
// to fix in update mode (422 access_not_granted, no_accounts); a product
// still being prepared, and a provider that refused kluis's own request,
// are 503 (reasons product_not_ready, provider_error): never a 500.
func registerProviderErrorStatuses() {
	RegisterErrorStatus(banklink.CodeAccessNotGranted, http.StatusUnprocessableEntity)
	RegisterErrorStatus(banklink.CodeNoAccounts, http.StatusUnprocessableEntity)
	RegisterErrorStatus(banklink.CodeProductNotReady, http.StatusServiceUnavailable)
	RegisterErrorStatus(banklink.CodeProviderError, http.StatusServiceUnavailable)
	// A Stitch token kluis lost (issue 15): the user must link again.
	RegisterErrorStatus(banklink.CodeItemRelinkRequired, http.StatusConflict)
}
