package config_test

import (
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/config"
)

func TestPlaidLinksScriptDefaultsToPlaidsAndAnOtherIsChecked(t *testing.T) {
	c, err := config.Load(env(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.PlaidLinkScriptURL != "" || c.PlaidLinkScriptIntegrity != "" {
		t.Fatalf("defaults = %q %q, want none (the hosted Plaid step then loads Plaid's own)", c.PlaidLinkScriptURL, c.PlaidLinkScriptIntegrity)
	}
	good := "sha384-" + strings.Repeat("A", 64)
	c, err = config.Load(env(t, map[string]string{"KLUIS_PLAID_LINK_SCRIPT_URL": "https://link.example.com/plaid/link-initialize.js",
		"KLUIS_PLAID_LINK_SCRIPT_INTEGRITY": good}))
	if err != nil || c.PlaidLinkScriptURL != "https://link.example.com/plaid/link-initialize.js" || c.PlaidLinkScriptIntegrity != good {
		t.Fatalf("read = %q %q (%v)", c.PlaidLinkScriptURL, c.PlaidLinkScriptIntegrity, err)
	}
	for name, bad := range map[string]string{
		"KLUIS_PLAID_LINK_SCRIPT_URL":       "/link-initialize.js",
		"KLUIS_PLAID_LINK_SCRIPT_INTEGRITY": "sha384-tooshort",
	} {
		if _, err := config.Load(env(t, map[string]string{name: bad})); err == nil || !strings.Contains(err.Error(), name+":") {
			t.Errorf("%s=%q: err = %v", name, bad, err)
		}
	}
	for _, bad := range []string{"javascript:alert(1)", "https://user:pw@link.example.com/x.js", "https://link.example.com/x.js#f", "md5-" + strings.Repeat("A", 24)} {
		name := "KLUIS_PLAID_LINK_SCRIPT_URL"
		if strings.HasPrefix(bad, "md5-") {
			name = "KLUIS_PLAID_LINK_SCRIPT_INTEGRITY"
		}
		if _, err := config.Load(env(t, map[string]string{name: bad})); err == nil || !strings.Contains(err.Error(), name+":") {
			t.Errorf("%s=%q: err = %v", name, bad, err)
		}
	}
}
