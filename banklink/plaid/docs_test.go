package plaid_test

import (
	"os"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
)

// TestTheDocsListEveryPlaidWebhookAndErrorCode (issue 14): docs/WEBHOOKS.md
// says what kluis does with every ITEM and AUTH webhook code of Plaid's
// OpenAPI description, and docs/PLAID.md with every error code the calls
// kluis makes can meet (plaidtest.ErrorCodes, which the error table test
// runs through the adapter).
func TestTheDocsListEveryPlaidWebhookAndErrorCode(t *testing.T) {
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile("../../docs/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	webhooks, errors := read("WEBHOOKS.md"), read("PLAID.md")
	spec := plaidtest.LoadSpec(t)
	for _, typ := range []string{"ITEM", "AUTH"} {
		codes := spec.WebhookCodes(typ)
		if len(codes) < 4 {
			t.Fatalf("the spec names %d %s webhook codes: %v", len(codes), typ, codes)
		}
		for _, code := range codes {
			if !strings.Contains(webhooks, "`"+code+"`") {
				t.Errorf("docs/WEBHOOKS.md does not say what kluis does with %s/%s", typ, code)
			}
		}
	}
	for code := range plaidtest.ErrorCodes() {
		if !strings.Contains(errors, "`"+code+"`") {
			t.Errorf("docs/PLAID.md does not say what kluis does with the error %s", code)
		}
	}
}
