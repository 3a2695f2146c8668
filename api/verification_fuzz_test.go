package api_test

import (
	"strings"
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api"
)

// refusedSafely fails unless err is nil or a 400 whose message quotes
// nothing of a secret-looking input.
func refusedSafely(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	if code := kluis.ErrorCode(err); code != kluis.EInvalid {
		t.Fatalf("error code %q for bad input, want %q", code, kluis.EInvalid)
	}
	msg := kluis.ErrorMessage(err)
	for _, s := range secrets {
		if len(s) >= 4 && strings.Contains(msg, s) {
			t.Fatalf("error message %q echoes the input", msg)
		}
	}
}

// FuzzDecodeConfirm: the confirm decoder never panics, refuses only with
// a 400 that does not echo the answer, and what it accepts is exactly one
// of amounts (one or two) and a non-empty code.
func FuzzDecodeConfirm(f *testing.F) {
	f.Add([]byte(`{"amounts":[12,34]}`))
	f.Add([]byte(`{"code":"ABC123"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ans, err := api.DecodeConfirm(body)
		refusedSafely(t, err, string(body))
		if err != nil {
			return
		}
		hasAmounts, hasCode := ans.Amounts != nil, ans.Code != ""
		if hasAmounts == hasCode {
			t.Fatalf("accepted %q with amounts %v and code %v", body, hasAmounts, hasCode)
		}
		if hasAmounts && len(ans.Amounts) != 1 && len(ans.Amounts) != 2 {
			t.Fatalf("accepted %d amounts", len(ans.Amounts))
		}
		if strings.Contains(ans.String(), ans.Code) && ans.Code != "" {
			t.Fatal("an answer prints its code")
		}
	})
}

// FuzzDecodeManualAccount: the manual account decoder never panics,
// refuses only with a 400 that quotes none of the numbers or the name, and
// what it accepts is valid.
func FuzzDecodeManualAccount(f *testing.F) {
	f.Add([]byte(`{"account_number":"12345678","routing_number":"021000021","account_type":"checking","holder_name":"Thandi Nkosi"}`))
	f.Add([]byte(`{"country":"ZA","bank_id":"za_capitec","account_number":"1234567890","account_type":"savings","holder_name":"Thandi Nkosi","holder_id_number":"8001015009087"}`))
	f.Add([]byte(`{"country":"ZA","bank_id":"za_fnb","branch_code":"250655","account_number":"62012345678","account_type":"cheque","holder_name":"T"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := api.DecodeManualAccount(body)
		refusedSafely(t, err, m.AccountNumber, m.RoutingNumber, m.HolderName, m.HolderIDNumber, m.BranchCode)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted an account that does not validate: %v", err)
		}
		for _, s := range []string{m.AccountNumber, m.RoutingNumber, m.HolderIDNumber, m.BranchCode} {
			if s != "" && strings.Contains(m.String(), s) {
				t.Fatal("a manual account prints its numbers")
			}
		}
	})
}
