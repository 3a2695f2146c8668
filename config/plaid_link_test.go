package config_test

import (
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/config"
)

func TestPlaidLinkSettingsDefaultAndAreCheckedAtLoad(t *testing.T) {
	c, err := config.Load(env(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.PlaidClientName != "kluis" || c.PlaidLanguage != "en" || strings.Join(c.PlaidCountryCodes, ",") != "US" ||
		c.PlaidRedirectURI != "" || c.PlaidAndroidPackageName != "" || c.PlaidSameDayMicrodeposits || c.PlaidAutomatedMicrodeposits {
		t.Fatalf("defaults = %+v", c)
	}
	c, err = config.Load(env(t, map[string]string{"KLUIS_PLAID_CLIENT_NAME": "Acme Pay", "KLUIS_PLAID_COUNTRY_CODES": "us, nl",
		"KLUIS_PLAID_LANGUAGE": "nl", "KLUIS_PLAID_REDIRECT_URI": "https://app.acme.test/oauth", "KLUIS_PLAID_ANDROID_PACKAGE_NAME": "com.acme.pay",
		"KLUIS_PLAID_SAME_DAY_MICRODEPOSITS": "true", "KLUIS_PLAID_AUTOMATED_MICRODEPOSITS": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.PlaidCountryCodes, ",") != "US,NL" || c.PlaidAndroidPackageName != "com.acme.pay" ||
		!c.PlaidSameDayMicrodeposits || !c.PlaidAutomatedMicrodeposits {
		t.Fatalf("read = %+v", c)
	}
	for name, bad := range map[string]string{
		"KLUIS_PLAID_CLIENT_NAME":             strings.Repeat("n", 31),
		"KLUIS_PLAID_COUNTRY_CODES":           "US,ZA",
		"KLUIS_PLAID_LANGUAGE":                "xx",
		"KLUIS_PLAID_REDIRECT_URI":            "http://app.acme.test/oauth",
		"KLUIS_PLAID_ANDROID_PACKAGE_NAME":    "not a package",
		"KLUIS_PLAID_SAME_DAY_MICRODEPOSITS":  "yes",
		"KLUIS_PLAID_AUTOMATED_MICRODEPOSITS": "1",
	} {
		_, err := config.Load(env(t, map[string]string{name: bad}))
		if err == nil || !strings.Contains(err.Error(), name+":") {
			t.Errorf("%s=%q: err = %v", name, bad, err)
		}
	}
}
