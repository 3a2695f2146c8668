package api_test

import (
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
)

// Issue 14 point 1: Link is configured per session where Plaid allows it,
// and products Plaid refuses are refused by kluis, naming the field.
func TestLinkSessionsRefuseBalanceAndPassAccountFiltersToPlaid(t *testing.T) {
	be := startBank(t, true)
	tok := userToken(t, "user_plaid_link_options")

	status, _, body := be.call(t, "POST", "/v1/link/sessions", tok, `{"products":["auth","balance"]}`)
	mustError(t, status, body, 400, "invalid_request")
	if !strings.Contains(body, "products") {
		t.Fatalf("the 400 does not name the field: %s", body)
	}
	if n := be.plaid.Calls(plaidtest.EndpointLinkTokenCreate); n != 0 {
		t.Fatalf("balance was forwarded to Plaid (%d calls)", n)
	}
	for _, bad := range []string{
		`{"account_filters":{"depository":["brokerage"]}}`,
		`{"account_selection":true}`,
		`{"platform":"windows"}`,
	} {
		status, _, body := be.call(t, "POST", "/v1/link/sessions", tok, bad)
		mustError(t, status, body, 400, "invalid_request")
	}

	status, _, body = be.call(t, "POST", "/v1/link/sessions", tok, `{"products":["auth"],"account_filters":{"depository":["checking","savings"]}}`)
	want(t, status, 201, body, nil)
	reqs := be.plaid.LinkTokenRequests()
	filters, _ := reqs[len(reqs)-1]["account_filters"].(map[string]any)
	dep, _ := filters["depository"].(map[string]any)
	if st, _ := dep["account_subtypes"].([]any); len(st) != 2 {
		t.Fatalf("account_filters sent = %v", reqs[len(reqs)-1]["account_filters"])
	}

	it := be.linkPlaid(t, tok, plaidtest.InstitutionAuth)
	status, _, body = be.call(t, "POST", "/v1/link/sessions", tok, `{"item_id":"`+it.ID+`","account_selection":true}`)
	want(t, status, 201, body, nil)
	reqs = be.plaid.LinkTokenRequests()
	if upd, _ := reqs[len(reqs)-1]["update"].(map[string]any); upd["account_selection_enabled"] != true {
		t.Fatalf("update mode request = %v", reqs[len(reqs)-1])
	}
}
