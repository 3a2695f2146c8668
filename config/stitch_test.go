package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/config"
)

func TestStitchSettingsAreRequiredAndCheckedWhenStitchIsConfigured(t *testing.T) {
	good := map[string]string{"KLUIS_BANK_PROVIDERS": "sandbox,stitch", "STITCH_CLIENT_ID": "client",
		"STITCH_CLIENT_SECRET": "secret", "KLUIS_STITCH_REDIRECT_URI": "https://kluis.example/link/callback/stitch",
		"STITCH_WEBHOOK_SECRET": "whsec_c2VjcmV0"}
	c, err := config.Load(env(t, good))
	if err != nil {
		t.Fatal(err)
	}
	if !c.HasBankProvider("stitch") || c.StitchBaseURL != "https://api.stitch.money" || c.StitchAuthURL != "https://secure.stitch.money" ||
		c.StitchKeepAliveAfter != config.DefaultStitchKeepAliveAfter {
		t.Fatalf("read = %+v", c)
	}
	for name, bad := range map[string]string{
		"STITCH_CLIENT_ID":          "",
		"STITCH_CLIENT_SECRET":      "",
		"KLUIS_STITCH_REDIRECT_URI": "https://kluis.example/elsewhere",
		"STITCH_BASE_URL":           "ftp://api.stitch.money",
		"STITCH_AUTH_URL":           "not a url",
		"STITCH_WEBHOOK_SECRET":     "plain",
		"KLUIS_BAV_REQUIRED_CHECKS": "account_exists,balance",
		// At or past Stitch's 365-day expiry, the keep-alive comes too late.
		"KLUIS_STITCH_KEEPALIVE_AFTER": "365d",
	} {
		e := map[string]string{}
		for k, v := range good {
			e[k] = v
		}
		e[name] = bad
		_, err := config.Load(env(t, e))
		if err == nil || !strings.Contains(err.Error(), name+":") {
			t.Errorf("%s=%q: err = %v", name, bad, err)
		}
	}
}

func TestTheRequiredBankChecksDefaultAndAreRead(t *testing.T) {
	c, err := config.Load(env(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.BAVRequiredChecks, ",") != "account_exists,account_open,id_number_matches" {
		t.Fatalf("default = %v", c.BAVRequiredChecks)
	}
	c, err = config.Load(env(t, map[string]string{"KLUIS_BAV_REQUIRED_CHECKS": "account_exists, name_matches"}))
	if err != nil || strings.Join(c.BAVRequiredChecks, ",") != "account_exists,name_matches" {
		t.Fatalf("read = %v (%v)", c.BAVRequiredChecks, err)
	}
}

func TestTheStitchKeepAliveTakesDaysAndSeconds(t *testing.T) {
	for in, want := range map[string]time.Duration{"300d": 300 * 24 * time.Hour, "90s": 90 * time.Second} {
		c, err := config.Load(env(t, map[string]string{"KLUIS_STITCH_KEEPALIVE_AFTER": in}))
		if err != nil || c.StitchKeepAliveAfter != want {
			t.Fatalf("%q = %v, %v; want %v", in, c.StitchKeepAliveAfter, err, want)
		}
	}
}
