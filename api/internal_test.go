package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/devpki"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
)

func TestTheInternalListenerRefusesConnectionsWithoutAGoodClientCertificate(t *testing.T) {
	env := apitest.Start(t)
	other, err := devpki.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Client("payments", "spiffe://kluis.test/payments")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		pair *devpki.Pair
	}{
		{"no client certificate", nil},
		{"a certificate from another CA", &foreign},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := apitest.ClientWith(t, env.CA, tc.pair)
			resp, err := c.Get(env.Internal.URL + "/metrics")
			if err == nil {
				resp.Body.Close()
				t.Fatalf("connection accepted with status %d", resp.StatusCode)
			}
		})
	}
}

func TestAServiceMissingFromThePolicyGets403(t *testing.T) {
	env := apitest.Start(t)
	status, _, body := apitest.Do(t, env.ServiceClient(t, "stranger"), "GET", env.Internal.URL+"/metrics", "", "", "")
	mustError(t, status, body, 403, "forbidden")
	if n := sumReasons(refusals(t, env), "service not in the policy"); n != 1 {
		t.Fatalf("audited refusals = %d, want 1", n)
	}
}

func TestAServiceInThePolicyReadsMetrics(t *testing.T) {
	env := apitest.Start(t)
	apitest.Do(t, nil, "GET", env.Public.URL+"/healthz", "", "", "")
	status, h, body := apitest.Do(t, env.ServiceClient(t, "payments"), "GET", env.Internal.URL+"/metrics", "", "", "")
	if status != 200 || !strings.Contains(body, "kluis_http_requests_total") {
		t.Fatalf("metrics = %d, want 200 with kluis's counters", status)
	}
	if h.Get("Cache-Control") != "no-store" {
		t.Fatal("internal answers must not be cached")
	}
}

func TestTheServiceIsNamedByItsCommonNameWithoutASpiffeID(t *testing.T) {
	env := apitest.Start(t)
	pair, err := env.CA.Client("payments", "")
	if err != nil {
		t.Fatal(err)
	}
	status, _, _ := apitest.Do(t, apitest.ClientWith(t, env.CA, &pair), "GET", env.Internal.URL+"/metrics", "", "", "")
	if status != 200 {
		t.Fatalf("status = %d, want 200 for CN=payments", status)
	}
}

func TestComplianceRoutesNeedAConsoleAndAStaffTokenWithMFA(t *testing.T) {
	env := apitest.Start(t)
	verify := env.Internal.URL + "/compliance/v1/audit/verify"
	console := env.ServiceClient(t, "compliance-console")
	cases := []struct {
		name   string
		client string
		token  string
		status int
		code   string
	}{
		{"a user token alone gets nowhere", "compliance-console", jwttest.Token(t), 401, "unauthenticated"},
		{"no token", "compliance-console", "", 401, "unauthenticated"},
		{"staff without mfa", "compliance-console", jwttest.StaffToken(t, jwttest.WithAMR("pwd")), 403, "forbidden"},
		{"staff without the compliance role", "compliance-console", jwttest.StaffToken(t, jwttest.WithRoles("support")), 403, "forbidden"},
		{"an expired staff token", "compliance-console", jwttest.StaffToken(t, jwttest.WithExpiresIn(-time.Hour)), 401, "unauthenticated"},
		{"a service that is not a console", "payments", jwttest.StaffToken(t), 403, "forbidden"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := apitest.Do(t, env.ServiceClient(t, tc.client), "POST", verify, tc.token, "", "")
			mustError(t, status, body, tc.status, tc.code)
		})
	}
	t.Run("a staff member with mfa through the console", func(t *testing.T) {
		status, _, body := apitest.Do(t, console, "POST", verify, jwttest.StaffToken(t), "", "")
		if status != 200 || !strings.Contains(body, `"ok":true`) {
			t.Fatalf("verify = %d %s", status, body)
		}
	})
}

func TestAUserTokenOnTheInternalListenerWithoutACertificateGetsNowhere(t *testing.T) {
	env := apitest.Start(t)
	c := apitest.ClientWith(t, env.CA, nil)
	resp, err := c.Get(env.Internal.URL + "/internal/v1/items/itm_x")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("connection accepted without a certificate: %d", resp.StatusCode)
	}
}

func TestASpiffeIDFromAnotherTrustDomainNamesNoService(t *testing.T) {
	env := apitest.Start(t, func(d *api.Deps) { d.TrustDomain = "kluis.test" })
	for _, tc := range []struct {
		name, spiffe string
		want         int
	}{
		{"the trust domain", "spiffe://kluis.test/payments", 200},
		{"another trust domain", "spiffe://evil.example/payments", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pair, err := env.CA.Client("payments", tc.spiffe)
			if err != nil {
				t.Fatal(err)
			}
			status, _, body := apitest.Do(t, apitest.ClientWith(t, env.CA, &pair), "GET", env.Internal.URL+"/metrics", "", "", "")
			if status != tc.want {
				t.Fatalf("status = %d %s, want %d", status, body, tc.want)
			}
		})
	}
}
