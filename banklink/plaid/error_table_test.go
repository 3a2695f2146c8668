package plaid_test

import (
	"context"
	"net/http"
	"sort"
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
)

// answers are the kluis codes a Plaid error may become, each with an HTTP
// status of its own in api (docs/PLAID.md): never kluis.EInternal.
var answers = map[string]bool{
	banklink.CodeItemLoginRequired: true, banklink.CodeInvalidCredentials: true, banklink.CodeInvalidToken: true,
	banklink.CodeProductNotSupported: true, banklink.CodeProductNotReady: true, banklink.CodeAccessNotGranted: true,
	banklink.CodeNoAccounts: true, banklink.CodeInstitutionDown: true, banklink.CodeRateLimited: true,
	banklink.CodeProviderError: true, kluis.EUnavailable: true,
}

// TestEveryPlaidErrorMapsToAKluisAnswer runs every error code plaidtest
// knows (Plaid's error reference for the calls kluis makes, and the codes
// the spec's examples name), and every error_type of the spec's
// PlaidErrorType enum with a code kluis has never seen, at 400 and at 500:
// each becomes a kluis answer that is not a 500, and Plaid's own failures
// (5xx) are unavailable.
func TestEveryPlaidErrorMapsToAKluisAnswer(t *testing.T) {
	srv := newServer(t)
	p := newProvider(t, srv, func(o *plaid.Options) { o.MaxRetries = -1 })
	ex := link(t, srv, p, plaidtest.InstitutionAuth)
	check := func(t *testing.T, f plaidtest.Fault) string {
		t.Helper()
		srv.FailNextWith(plaidtest.EndpointAccountsGet, 1, f)
		_, err := p.GetAccounts(context.Background(), ex.AccessToken)
		code := kluis.ErrorCode(err)
		if !answers[code] {
			t.Fatalf("%s/%s (HTTP %d) became %q", f.ErrorType, f.ErrorCode, f.Status, code)
		}
		if f.Status >= 500 && f.ErrorType != "RATE_LIMIT_EXCEEDED" && code != kluis.EUnavailable && code != banklink.CodeInstitutionDown {
			t.Fatalf("Plaid's own failure %s/%s became %q, want unavailable", f.ErrorType, f.ErrorCode, code)
		}
		return code
	}
	codes := plaidtest.ErrorCodes()
	names := make([]string, 0, len(codes))
	for c := range codes {
		names = append(names, c)
	}
	sort.Strings(names)
	for _, c := range names {
		t.Run(c, func(t *testing.T) { check(t, codes[c]) })
	}
	types := plaidtest.LoadSpec(t).ErrorTypes()
	if len(types) < 10 {
		t.Fatalf("the spec lists %d error types", len(types))
	}
	for _, typ := range types {
		for _, status := range []int{http.StatusBadRequest, http.StatusInternalServerError} {
			t.Run(typ, func(t *testing.T) {
				check(t, plaidtest.Fault{Status: status, ErrorType: typ, ErrorCode: "A_CODE_KLUIS_HAS_NEVER_SEEN"})
			})
		}
	}
}
