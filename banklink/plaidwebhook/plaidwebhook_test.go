package plaidwebhook_test

import (
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaidwebhook"
)

// TestDecodeNamesTheKindOfEveryCodeKluisActsOn is the table of
// docs/WEBHOOKS.md as code: each Plaid-shaped body decodes to its kind, the
// provider's type and code, the item and (where the code names one) the
// account; what kluis does not act on is unknown; junk never passes into
// what is recorded.
func TestDecodeNamesTheKindOfEveryCodeKluisActsOn(t *testing.T) {
	cases := []struct {
		name, body string
		want       banklink.WebhookEvent
	}{
		{"login error", `{"webhook_type":"ITEM","webhook_code":"ERROR","item_id":"it","error":{"error_code":"ITEM_LOGIN_REQUIRED"}}`,
			banklink.WebhookEvent{Kind: banklink.EventLoginRequired, ProviderType: "ITEM", ProviderCode: "ERROR:ITEM_LOGIN_REQUIRED", ProviderItemID: "it"}},
		{"another login error", `{"webhook_type":"ITEM","webhook_code":"ERROR","item_id":"it","error":{"error_code":"ITEM_LOCKED"}}`,
			banklink.WebhookEvent{Kind: banklink.EventLoginRequired, ProviderType: "ITEM", ProviderCode: "ERROR:ITEM_LOCKED", ProviderItemID: "it"}},
		{"an outage", `{"webhook_type":"ITEM","webhook_code":"ERROR","item_id":"it","error":{"error_code":"INSTITUTION_DOWN"}}`,
			banklink.WebhookEvent{Kind: banklink.EventItemError, ProviderType: "ITEM", ProviderCode: "ERROR:INSTITUTION_DOWN", ProviderItemID: "it"}},
		{"an error code with digits is dropped", `{"webhook_type":"ITEM","webhook_code":"ERROR","item_id":"it","error":{"error_code":"123456789"}}`,
			banklink.WebhookEvent{Kind: banklink.EventItemError, ProviderType: "ITEM", ProviderCode: "ERROR", ProviderItemID: "it"}},
		{"repaired", `{"webhook_type":"ITEM","webhook_code":"LOGIN_REPAIRED","item_id":"it"}`,
			banklink.WebhookEvent{Kind: banklink.EventLoginRepaired, ProviderType: "ITEM", ProviderCode: "LOGIN_REPAIRED", ProviderItemID: "it"}},
		{"pending expiration", `{"webhook_type":"ITEM","webhook_code":"PENDING_EXPIRATION","item_id":"it"}`,
			banklink.WebhookEvent{Kind: banklink.EventLoginRequired, ProviderType: "ITEM", ProviderCode: "PENDING_EXPIRATION", ProviderItemID: "it"}},
		{"pending disconnect", `{"webhook_type":"ITEM","webhook_code":"PENDING_DISCONNECT","item_id":"it"}`,
			banklink.WebhookEvent{Kind: banklink.EventLoginRequired, ProviderType: "ITEM", ProviderCode: "PENDING_DISCONNECT", ProviderItemID: "it"}},
		{"consent withdrawn", `{"webhook_type":"ITEM","webhook_code":"USER_PERMISSION_REVOKED","item_id":"it"}`,
			banklink.WebhookEvent{Kind: banklink.EventRevoked, ProviderType: "ITEM", ProviderCode: "USER_PERMISSION_REVOKED", ProviderItemID: "it"}},
		{"one account withdrawn", `{"webhook_type":"ITEM","webhook_code":"USER_ACCOUNT_REVOKED","item_id":"it","account_id":"ac"}`,
			banklink.WebhookEvent{Kind: banklink.EventAccountRevoked, ProviderType: "ITEM", ProviderCode: "USER_ACCOUNT_REVOKED", ProviderItemID: "it", ProviderAccountID: "ac"}},
		{"an account withdrawn without its account", `{"webhook_type":"ITEM","webhook_code":"USER_ACCOUNT_REVOKED","item_id":"it"}`,
			banklink.WebhookEvent{Kind: banklink.EventUnknown, ProviderType: "ITEM", ProviderCode: "USER_ACCOUNT_REVOKED", ProviderItemID: "it"}},
		{"new accounts", `{"webhook_type":"ITEM","webhook_code":"NEW_ACCOUNTS_AVAILABLE","item_id":"it","error":null}`,
			banklink.WebhookEvent{Kind: banklink.EventNewAccounts, ProviderType: "ITEM", ProviderCode: "NEW_ACCOUNTS_AVAILABLE", ProviderItemID: "it"}},
		{"webhook updated", `{"webhook_type":"ITEM","webhook_code":"WEBHOOK_UPDATE_ACKNOWLEDGED","item_id":"it","new_webhook_url":"u"}`,
			banklink.WebhookEvent{Kind: banklink.EventWebhookUpdated, ProviderType: "ITEM", ProviderCode: "WEBHOOK_UPDATE_ACKNOWLEDGED", ProviderItemID: "it"}},
		{"verified, with a string error", `{"webhook_type":"AUTH","webhook_code":"AUTOMATICALLY_VERIFIED","item_id":"it","account_id":"ac","error":"x"}`,
			banklink.WebhookEvent{Kind: banklink.EventAuthVerified, ProviderType: "AUTH", ProviderCode: "AUTOMATICALLY_VERIFIED", ProviderItemID: "it", ProviderAccountID: "ac"}},
		{"expired", `{"webhook_type":"AUTH","webhook_code":"VERIFICATION_EXPIRED","item_id":"it","account_id":"ac"}`,
			banklink.WebhookEvent{Kind: banklink.EventAuthExpired, ProviderType: "AUTH", ProviderCode: "VERIFICATION_EXPIRED", ProviderItemID: "it", ProviderAccountID: "ac"}},
		{"SMS verified", `{"webhook_type":"AUTH","webhook_code":"SMS_MICRODEPOSITS_VERIFICATION","item_id":"it","account_id":"ac","status":"MANUALLY_VERIFIED"}`,
			banklink.WebhookEvent{Kind: banklink.EventAuthVerified, ProviderType: "AUTH", ProviderCode: "SMS_MICRODEPOSITS_VERIFICATION", ProviderItemID: "it", ProviderAccountID: "ac", VerificationStatus: "manually_verified"}},
		{"SMS failed", `{"webhook_type":"AUTH","webhook_code":"SMS_MICRODEPOSITS_VERIFICATION","item_id":"it","account_id":"ac","status":"VERIFICATION_FAILED"}`,
			banklink.WebhookEvent{Kind: banklink.EventAuthFailed, ProviderType: "AUTH", ProviderCode: "SMS_MICRODEPOSITS_VERIFICATION", ProviderItemID: "it", ProviderAccountID: "ac", VerificationStatus: "verification_failed"}},
		{"Auth's permission withdrawn", `{"webhook_type":"AUTH","webhook_code":"PRODUCT_PERMISSIONS_REQUIRED","item_id":"it"}`,
			banklink.WebhookEvent{Kind: banklink.EventLoginRequired, ProviderType: "AUTH", ProviderCode: "PRODUCT_PERMISSIONS_REQUIRED", ProviderItemID: "it"}},
		{"numbers changed", `{"webhook_type":"AUTH","webhook_code":"DEFAULT_UPDATE","item_id":"it"}`,
			banklink.WebhookEvent{Kind: banklink.EventUnknown, ProviderType: "AUTH", ProviderCode: "DEFAULT_UPDATE", ProviderItemID: "it"}},
		{"an ITEM code only AUTH has", `{"webhook_type":"ITEM","webhook_code":"AUTOMATICALLY_VERIFIED","item_id":"it","account_id":"ac"}`,
			banklink.WebhookEvent{Kind: banklink.EventUnknown, ProviderType: "ITEM", ProviderCode: "AUTOMATICALLY_VERIFIED", ProviderItemID: "it"}},
		{"another product", `{"webhook_type":"TRANSACTIONS","webhook_code":"DEFAULT_UPDATE","item_id":"it"}`,
			banklink.WebhookEvent{Kind: banklink.EventUnknown, ProviderType: "TRANSACTIONS", ProviderCode: "DEFAULT_UPDATE", ProviderItemID: "it"}},
		{"junk ids are dropped", `{"webhook_type":"ITEM","webhook_code":"LOGIN_REPAIRED","item_id":"<script>"}`,
			banklink.WebhookEvent{Kind: banklink.EventLoginRepaired, ProviderType: "ITEM", ProviderCode: "LOGIN_REPAIRED"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := plaidwebhook.Decode([]byte(tc.body))
			if err != nil || got != tc.want {
				t.Fatalf("Decode = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	if _, err := plaidwebhook.Decode([]byte(`not json`)); kluis.ErrorCode(err) != kluis.EInvalid {
		t.Fatalf("a body that is not JSON = %v, want invalid", err)
	}
	if plaidwebhook.TypeOf("VERIFICATION_EXPIRED") != "AUTH" || plaidwebhook.TypeOf("ERROR") != "ITEM" || plaidwebhook.TypeOf("DEFAULT_UPDATE") != "ITEM" {
		t.Fatal("TypeOf names the wrong type")
	}
}
