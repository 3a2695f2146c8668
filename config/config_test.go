package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/config"
)

func env(t *testing.T, overrides map[string]string) config.Getenv {
	t.Helper()
	dir := t.TempDir()
	jwks := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwks, []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	base := map[string]string{
		"KLUIS_DATABASE_URL":   "postgres://kluis:secret-password@db:5432/kluis",
		"KLUIS_JWT_JWKS_FILE":  jwks,
		"KLUIS_JWT_ISSUER":     "https://idp.example/",
		"KLUIS_LOCAL_KEK_FILE": filepath.Join(dir, "kek"),
	}
	for k, v := range overrides {
		base[k] = v
	}
	return func(k string) string { return base[k] }
}

func TestTheDefaultsMatchTheContract(t *testing.T) {
	c, err := config.Load(env(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	got := []string{c.Env, c.PublicAddr, c.InternalAddr, c.JWTAudience, c.StaffJWTAudience, c.KeyProvider, c.TransitMount, c.TransitKey, c.BankProvider, c.LogLevel}
	want := []string{"development", "127.0.0.1:8080", "127.0.0.1:8081", "kluis", "kluis-staff", "local", "transit", "kluis", "sandbox", "info"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("defaults = %v, want %v", got, want)
	}
	if c.RequestTimeout.String() != "10s" {
		t.Fatalf("request timeout = %s, want 10s", c.RequestTimeout)
	}
	if c.StaffMFAMaxAge != 15*time.Minute || c.StaffTokenMaxLifetime != 90*time.Minute {
		t.Fatalf("staff token bounds = %s, %s; want 15m, 90m", c.StaffMFAMaxAge, c.StaffTokenMaxLifetime)
	}
}

func TestEveryBadValueIsNamed(t *testing.T) {
	cases := []struct {
		name      string
		overrides map[string]string
		want      []string
	}{
		{"missing database and issuer", map[string]string{"KLUIS_DATABASE_URL": "", "KLUIS_JWT_ISSUER": ""},
			[]string{"KLUIS_DATABASE_URL: is required", "KLUIS_JWT_ISSUER: is required"}},
		{"unknown env", map[string]string{"KLUIS_ENV": "staging"}, []string{"KLUIS_ENV"}},
		{"unknown key provider", map[string]string{"KLUIS_KEY_PROVIDER": "rot13"}, []string{"KLUIS_KEY_PROVIDER"}},
		{"awskms without a key", map[string]string{"KLUIS_KEY_PROVIDER": "awskms"}, []string{"KLUIS_AWSKMS_KEY_ID: is required"}},
		{"plaid without credentials", map[string]string{"KLUIS_BANK_PROVIDER": "plaid"},
			[]string{"PLAID_CLIENT_ID", "PLAID_SECRET", "PLAID_BASE_URL"}},
		{"a rate without a unit", map[string]string{"KLUIS_RATE_LIMIT_ADDRESS": "100"}, []string{"KLUIS_RATE_LIMIT_ADDRESS"}},
		{"an upper-case trust domain", map[string]string{"KLUIS_SPIFFE_TRUST_DOMAIN": "Kluis.dev"}, []string{"KLUIS_SPIFFE_TRUST_DOMAIN"}},
		{"a trust domain given as a URI", map[string]string{"KLUIS_SPIFFE_TRUST_DOMAIN": "spiffe://kluis.dev"}, []string{"KLUIS_SPIFFE_TRUST_DOMAIN"}},
		{"staff MFA age out of bounds", map[string]string{"KLUIS_STAFF_MFA_MAX_AGE": "30s"}, []string{"KLUIS_STAFF_MFA_MAX_AGE"}},
		{"staff token lifetime not a duration", map[string]string{"KLUIS_STAFF_TOKEN_MAX_LIFETIME": "forever"}, []string{"KLUIS_STAFF_TOKEN_MAX_LIFETIME"}},
		{"a rate per day", map[string]string{"KLUIS_RATE_LIMIT_REVEAL": "5/d"}, []string{"KLUIS_RATE_LIMIT_REVEAL"}},
		{"idempotency kept under a day", map[string]string{"KLUIS_IDEMPOTENCY_TTL": "1h"}, []string{"KLUIS_IDEMPOTENCY_TTL"}},
		{"bad proxy CIDR", map[string]string{"KLUIS_TRUSTED_PROXIES": "10.0.0.0/8, nonsense"}, []string{"KLUIS_TRUSTED_PROXIES"}},
		{"same audiences", map[string]string{"KLUIS_STAFF_JWT_AUDIENCE": "kluis"}, []string{"KLUIS_STAFF_JWT_AUDIENCE"}},
		{"both JWKS sources", map[string]string{"KLUIS_JWT_JWKS_URL": "https://idp.example/jwks"}, []string{"not both"}},
		{"bad log level", map[string]string{"KLUIS_LOG_LEVEL": "loud"}, []string{"KLUIS_LOG_LEVEL"}},
		{"bad timeout", map[string]string{"KLUIS_REQUEST_TIMEOUT": "forever"}, []string{"KLUIS_REQUEST_TIMEOUT"}},
		{"half an internal TLS setup", map[string]string{"KLUIS_INTERNAL_TLS_CERT": "/nonexistent.crt"},
			[]string{"KLUIS_INTERNAL_TLS_KEY: is required", "KLUIS_INTERNAL_CLIENT_CA: is required", "KLUIS_SERVICE_POLICY_FILE: is required"}},
		{"not a postgres URL", map[string]string{"KLUIS_DATABASE_URL": "mysql://root:hunter2@db/x"}, []string{"KLUIS_DATABASE_URL"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Load(env(t, tc.overrides))
			if err == nil {
				t.Fatal("bad configuration accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			for _, secret := range []string{"secret-password", "hunter2"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error repeats a password: %q", err)
				}
			}
		})
	}
}

func TestProductionRefusesTheLocalKeyTheSandboxAndAnInternalListenerWithoutMutualTLS(t *testing.T) {
	_, err := config.Load(env(t, map[string]string{"KLUIS_ENV": "production"}))
	if err == nil {
		t.Fatal("production started with development settings")
	}
	for _, want := range []string{"refuses the local root key", "refuses the sandbox provider", "requires mutual TLS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestProductionStartsWithProductionSettings(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{}
	for _, n := range []string{"cert", "key", "ca", "policy"} {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		files[n] = p
	}
	_, err := config.Load(env(t, map[string]string{
		"KLUIS_ENV": "production", "KLUIS_KEY_PROVIDER": "awskms", "KLUIS_AWSKMS_KEY_ID": "alias/kluis",
		"KLUIS_BANK_PROVIDER": "plaid", "PLAID_CLIENT_ID": "id", "PLAID_SECRET": "s", "PLAID_BASE_URL": "https://production.plaid.example",
		"KLUIS_INTERNAL_TLS_CERT": files["cert"], "KLUIS_INTERNAL_TLS_KEY": files["key"],
		"KLUIS_INTERNAL_CLIENT_CA": files["ca"], "KLUIS_SERVICE_POLICY_FILE": files["policy"],
	}))
	if err != nil {
		t.Fatalf("production settings refused: %v", err)
	}
}

func TestRateLimitsDefaultAndParse(t *testing.T) {
	c, err := config.Load(env(t, map[string]string{"KLUIS_RATE_LIMIT_SUBJECT": "30/s", "KLUIS_RATE_LIMIT_LINK_SESSION": "off"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.RateReveal != (config.Rate{Events: 2000, Per: time.Second}) {
		t.Fatalf("reveal = %+v, want the default 2000/s (the contract asks for at least 1,000 a second)", c.RateReveal)
	}
	if c.RateSubject != (config.Rate{Events: 30, Per: time.Second}) || c.RateLinkSession != (config.Rate{}) {
		t.Fatalf("subject = %+v, link session = %+v; want 30/s and off", c.RateSubject, c.RateLinkSession)
	}
	if c.IdempotencyTTL != 24*time.Hour {
		t.Fatalf("idempotency TTL = %s, want 24h", c.IdempotencyTTL)
	}
}

func TestScheduledBankTokenRotationIsOffUnlessGivenAPositiveDuration(t *testing.T) {
	cases := []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"", 0, false},
		{"off", 0, false},
		{"3s", 3 * time.Second, false},
		{"90d", 90 * 24 * time.Hour, false},
		{"0s", 0, true},
		{"-1h", 0, true},
		{"sometimes", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			c, err := config.Load(env(t, map[string]string{"KLUIS_BANK_TOKEN_MAX_AGE": tc.in}))
			if tc.bad {
				if err == nil || !strings.Contains(err.Error(), "KLUIS_BANK_TOKEN_MAX_AGE") {
					t.Fatalf("%q accepted", tc.in)
				}
				return
			}
			if err != nil || c.BankTokenMaxAge != tc.want {
				t.Fatalf("%q = %v, %v; want %v", tc.in, c.BankTokenMaxAge, err, tc.want)
			}
		})
	}
}

func TestVerificationLimitsDefaultAndAreChecked(t *testing.T) {
	c, err := config.Load(env(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	hour := config.Rate{Events: 20, Per: time.Hour}
	if c.VerificationLockout != 30*24*time.Hour || c.VerificationNumberFailures != 6 ||
		c.RateManualAccount != hour || c.RateVerificationStart != hour {
		t.Fatalf("defaults = %s, %d, %+v, %+v; want 30d, 6, 20/h, 20/h", c.VerificationLockout, c.VerificationNumberFailures,
			c.RateManualAccount, c.RateVerificationStart)
	}
	c, err = config.Load(env(t, map[string]string{"KLUIS_VERIFICATION_LOCKOUT": "7d", "KLUIS_VERIFICATION_NUMBER_FAILURES": "10",
		"KLUIS_RATE_LIMIT_MANUAL_ACCOUNT": "5/h", "KLUIS_RATE_LIMIT_VERIFICATION_START": "off"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.VerificationLockout != 7*24*time.Hour || c.VerificationNumberFailures != 10 ||
		c.RateManualAccount != (config.Rate{Events: 5, Per: time.Hour}) || c.RateVerificationStart != (config.Rate{}) {
		t.Fatalf("parsed = %s, %d, %+v, %+v", c.VerificationLockout, c.VerificationNumberFailures, c.RateManualAccount, c.RateVerificationStart)
	}
	for _, tc := range []struct {
		name      string
		overrides map[string]string
		want      string
	}{
		{"a lockout of a minute", map[string]string{"KLUIS_VERIFICATION_LOCKOUT": "1m"}, "KLUIS_VERIFICATION_LOCKOUT"},
		{"a number limit one attacker could reach alone", map[string]string{"KLUIS_VERIFICATION_NUMBER_FAILURES": "2"}, "KLUIS_VERIFICATION_NUMBER_FAILURES"},
		{"a rate without a unit", map[string]string{"KLUIS_RATE_LIMIT_MANUAL_ACCOUNT": "20"}, "KLUIS_RATE_LIMIT_MANUAL_ACCOUNT"},
		{"a bad start rate", map[string]string{"KLUIS_RATE_LIMIT_VERIFICATION_START": "20/week"}, "KLUIS_RATE_LIMIT_VERIFICATION_START"},
		{"failures purged before the lock lifts", map[string]string{"KLUIS_RETENTION_VERIFICATION_FAILURES": "10d"},
			"KLUIS_RETENTION_VERIFICATION_FAILURES: must be at least KLUIS_VERIFICATION_LOCKOUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Load(env(t, tc.overrides))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func TestDurationsTakeGoSyntaxOrWholeDays(t *testing.T) {
	cases := []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"", 365 * 24 * time.Hour, false},
		{"30d", 30 * 24 * time.Hour, false},
		{"2160h", 2160 * time.Hour, false},
		{"0d", 0, true},
		{"-1h", 0, true},
		{"ninety days", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			c, err := config.Load(env(t, map[string]string{"KLUIS_KEY_CRYPTOPERIOD": tc.in}))
			if tc.bad {
				if err == nil || !strings.Contains(err.Error(), "KLUIS_KEY_CRYPTOPERIOD") {
					t.Fatalf("%q accepted", tc.in)
				}
				return
			}
			if err != nil || c.KeyCryptoperiod != tc.want {
				t.Fatalf("%q = %v, %v; want %v", tc.in, c.KeyCryptoperiod, err, tc.want)
			}
		})
	}
}

func TestSeveralBankProviders(t *testing.T) {
	plaid := map[string]string{"PLAID_CLIENT_ID": "id", "PLAID_SECRET": "s", "PLAID_BASE_URL": "https://sandbox.plaid.example"}
	with := func(m map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range plaid {
			out[k] = v
		}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	t.Run("a list keeps its order and its first is the default", func(t *testing.T) {
		c, err := config.Load(env(t, with(map[string]string{"KLUIS_BANK_PROVIDERS": " plaid , sandbox"})))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(c.BankProviders, ",") != "plaid,sandbox" || c.BankProvider != "plaid" || !c.HasBankProvider("sandbox") {
			t.Fatalf("providers = %v, default %q", c.BankProviders, c.BankProvider)
		}
	})
	t.Run("the older single setting still works", func(t *testing.T) {
		c, err := config.Load(env(t, with(map[string]string{"KLUIS_BANK_PROVIDER": "plaid"})))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(c.BankProviders, ",") != "plaid" || c.HasBankProvider("sandbox") {
			t.Fatalf("providers = %v", c.BankProviders)
		}
	})
	refused := []struct {
		name      string
		overrides map[string]string
		want      string
	}{
		{"an unknown provider", map[string]string{"KLUIS_BANK_PROVIDERS": "sandbox,bogus"}, "KLUIS_BANK_PROVIDERS: must be a comma-separated list"},
		{"an empty name", map[string]string{"KLUIS_BANK_PROVIDERS": "sandbox,,plaid"}, "KLUIS_BANK_PROVIDERS: must be a comma-separated list"},
		{"a duplicate", map[string]string{"KLUIS_BANK_PROVIDERS": "sandbox,plaid,sandbox"}, "KLUIS_BANK_PROVIDERS: names sandbox twice"},
		{"both settings", map[string]string{"KLUIS_BANK_PROVIDERS": "sandbox", "KLUIS_BANK_PROVIDER": "plaid"}, "not both"},
		{"plaid in the list without its credentials", map[string]string{"KLUIS_BANK_PROVIDERS": "sandbox,plaid", "PLAID_SECRET": " "}, "PLAID_SECRET: is required"},
		{"one webhook URL for several providers", map[string]string{"KLUIS_BANK_PROVIDERS": "sandbox,plaid",
			"KLUIS_BANK_WEBHOOK_URL": "https://kluis.example/webhooks/plaid"}, "KLUIS_BANK_WEBHOOK_URL"},
		{"production with the sandbox second", map[string]string{"KLUIS_ENV": "production", "KLUIS_BANK_PROVIDERS": "plaid,sandbox"},
			"KLUIS_BANK_PROVIDERS: production refuses the sandbox provider"},
	}
	for _, tt := range refused {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			_, err := config.Load(env(t, with(tt.overrides)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
	t.Run("a webhook URL naming {provider} serves several", func(t *testing.T) {
		_, err := config.Load(env(t, with(map[string]string{"KLUIS_BANK_PROVIDERS": "sandbox,plaid",
			"KLUIS_BANK_WEBHOOK_URL": "https://kluis.example/webhooks/{provider}"})))
		if err != nil {
			t.Fatal(err)
		}
	})
}

func TestAppOriginsAreCanonicalAndRefusedWhenTheyAreNotOrigins(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://App.Example.com", "https://app.example.com"},
		{"https://app.example.com:443/", "https://app.example.com"},
		{"http://127.0.0.1:5173", "http://127.0.0.1:5173"},
		{"http://[::1]:80", "http://[::1]"},
	} {
		got, err := config.CanonicalOrigin(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("CanonicalOrigin(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"app.example.com", "https://*.example.com", "https://app.example.com/path", "javascript:alert(1)",
		"https://user@app.example.com", "ftp://app.example.com", "https://app.example.com?x=1", "null"} {
		if got, err := config.CanonicalOrigin(bad); err == nil {
			t.Errorf("CanonicalOrigin(%q) = %q, want an error", bad, got)
		}
	}
}

func TestDormantSubjectRetentionIsOffUnlessSetAndFitsTheAuditLog(t *testing.T) {
	c, err := config.Load(env(t, nil))
	if err != nil || c.DormantSubjects != 0 {
		t.Fatalf("default = %s, %v; want off", c.DormantSubjects, err)
	}
	c, err = config.Load(env(t, map[string]string{"KLUIS_RETENTION_DORMANT_SUBJECTS": "365d"}))
	if err != nil || c.DormantSubjects != 365*24*time.Hour {
		t.Fatalf("365d = %s, %v", c.DormantSubjects, err)
	}
	for _, tc := range []struct {
		name      string
		overrides map[string]string
		want      string
	}{
		{"a day", map[string]string{"KLUIS_RETENTION_DORMANT_SUBJECTS": "1d"}, "KLUIS_RETENTION_DORMANT_SUBJECTS: must be off or at least"},
		{"longer than the audit log is kept", map[string]string{"KLUIS_RETENTION_DORMANT_SUBJECTS": "3y"},
			"KLUIS_RETENTION_DORMANT_SUBJECTS"},
		{"longer than a shortened audit log", map[string]string{"KLUIS_RETENTION_DORMANT_SUBJECTS": "400d", "KLUIS_RETENTION_AUDIT_ENTRIES": "380d"},
			"must not be longer than KLUIS_RETENTION_AUDIT_ENTRIES"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Load(env(t, tc.overrides))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one naming %s", err, tc.want)
			}
		})
	}
}
