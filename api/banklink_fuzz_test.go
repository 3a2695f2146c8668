package api

import "testing"

// FuzzDecodeBankLinkAndComplianceRequests feeds arbitrary bodies to the
// decoders of the bank-linking and compliance routes: each must refuse bad
// input with a 400 that does not echo it, and never panic.
func FuzzDecodeBankLinkAndComplianceRequests(f *testing.F) {
	for _, s := range []string{
		`{"products":["auth"]}`, `{"products":["auth"],"item_id":"itm_x"}`, `{"public_token":"public-sandbox-x"}`,
		`{"link_session_id":"lks_x","institution_id":"ins_sandbox","username":"user_good","password":"pass_good"}`,
		`{"code":"ERROR","error_code":"ITEM_LOGIN_REQUIRED"}`, `{"subject_id":"user_1","reason":"TICKET-1"}`, `{"products":"auth"}`,
		`{"products":[1]}`, `{"reason":` + "\"\u0000\"}", `{}`, `[]`, `null`, `{"a":1}{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		targets := []any{
			&createLinkSessionRequest{}, &exchangeRequest{}, &sandboxPublicTokenRequest{},
			&fireWebhookRequest{}, &subjectRequest{},
		}
		for _, v := range targets {
			safeRefusal(t, DecodeStrict(body, v), body)
		}
	})
}
