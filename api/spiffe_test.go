package api

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api/devpki"
)

func TestParseSPIFFEID(t *testing.T) {
	t.Parallel()
	good := []struct {
		raw, td, path string
	}{
		{"spiffe://kluis.dev/payments", "kluis.dev", "/payments"},
		{"spiffe://kluis.dev/ns/payments/sa/api", "kluis.dev", "/ns/payments/sa/api"},
		{"spiffe://kluis.dev", "kluis.dev", ""},
		{"spiffe://a-b_c.9/Pay.ments-2_x", "a-b_c.9", "/Pay.ments-2_x"},
		{"spiffe://kluis.dev/...", "kluis.dev", "/..."},
	}
	for _, tc := range good {
		id, err := ParseSPIFFEID(tc.raw)
		if err != nil || id.TrustDomain != tc.td || id.Path != tc.path {
			t.Errorf("ParseSPIFFEID(%q) = %+v, %v; want {%s %s}", tc.raw, id, err, tc.td, tc.path)
		}
	}
	bad := []struct{ name, raw string }{
		{"a trailing slash", "spiffe://kluis.dev/payments/"},
		{"an empty segment", "spiffe://kluis.dev//payments"},
		{"percent-encoding", "spiffe://kluis.dev/%70ayments"},
		{"a query and a fragment", "spiffe://kluis.dev/payments?x#y"},
		{"a query", "spiffe://kluis.dev/payments?x"},
		{"an empty query", "spiffe://kluis.dev/payments?"},
		{"an empty fragment", "spiffe://kluis.dev/payments#"},
		{"userinfo and an upper-case trust domain", "spiffe://user@KLUIS.DEV/payments"},
		{"userinfo", "spiffe://user@kluis.dev/payments"},
		{"an upper-case trust domain", "spiffe://KLUIS.DEV/payments"},
		{"a port", "spiffe://kluis.dev:443/payments"},
		{"an upper-case scheme", "SPIFFE://kluis.dev/payments"},
		{"another scheme", "https://kluis.dev/payments"},
		{"no trust domain", "spiffe:///payments"},
		{"a dot segment", "spiffe://kluis.dev/./payments"},
		{"a dot-dot segment", "spiffe://kluis.dev/ns/../payments"},
		{"a root path", "spiffe://kluis.dev/"},
		{"a space", "spiffe://kluis.dev/pay ments"},
		{"a non-ASCII letter", "spiffe://kluis.dev/paymentś"},
		{"a NUL", "spiffe://kluis.dev/payments\x00"},
		{"a backslash", `spiffe://kluis.dev/pay\ments`},
		{"no scheme", "kluis.dev/payments"},
		{"an opaque URI", "spiffe:kluis.dev/payments"},
		{"too long", "spiffe://kluis.dev/" + strings.Repeat("a", 2048)},
		{"a trust domain too long", "spiffe://" + strings.Repeat("a", 256) + "/payments"},
		{"empty", ""},
	}
	for _, tc := range bad {
		if id, err := ParseSPIFFEID(tc.raw); err == nil {
			t.Errorf("%s: ParseSPIFFEID(%q) = %+v, want an error", tc.name, tc.raw, id)
		}
	}
}

// FuzzParseSPIFFEID: whatever the input, an accepted ID is exactly
// "spiffe://" + trust domain + path, holds only the characters the
// specification allows, and has no empty, "." or ".." segment.
func FuzzParseSPIFFEID(f *testing.F) {
	for _, s := range []string{
		"spiffe://kluis.dev/payments", "spiffe://kluis.dev", "spiffe://kluis.dev/payments/",
		"spiffe://kluis.dev//payments", "spiffe://kluis.dev/%70ayments", "spiffe://kluis.dev/payments?x#y",
		"spiffe://user@KLUIS.DEV/payments", "spiffe://kluis.dev:8443/a", "spiffe://kluis.dev/ns/a/sa/b",
		"spiffe://kluis.dev/..", "SPIFFE://kluis.dev/a", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		id, err := ParseSPIFFEID(raw)
		if err != nil {
			return
		}
		if "spiffe://"+id.TrustDomain+id.Path != raw {
			t.Fatalf("%q parsed as %+v, which is not the same ID", raw, id)
		}
		if len(raw) > maxSPIFFEIDBytes || id.TrustDomain == "" || strings.ToLower(id.TrustDomain) != id.TrustDomain {
			t.Fatalf("%q accepted with trust domain %q", raw, id.TrustDomain)
		}
		if strings.ContainsAny(raw[len("spiffe://"):], "@:?#%\\ ") {
			t.Fatalf("%q accepted with userinfo, a port, a query, a fragment or an escape", raw)
		}
		// What net/url (and so crypto/x509) makes of it agrees, with nothing
		// left over.
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "spiffe" || u.Host != id.TrustDomain || u.Path != id.Path || u.RawPath != "" ||
			u.User != nil || u.Port() != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
			t.Fatalf("%q accepted as %+v, but net/url reads %#v (%v)", raw, id, u, err)
		}
		if id.Path == "" {
			return
		}
		for _, seg := range strings.Split(id.Path[1:], "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("%q accepted with segment %q", raw, seg)
			}
		}
	})
}

const identityPolicy = `
services:
  payments:
    reveal:
      kinds: [account_number]
      purposes: [balance_check]
  reporting:
    spiffe_id: /ns/reporting/sa/api
`

// TestServiceIdentity holds every identity the issue found accepted as
// "payments" with KLUIS_SPIFFE_TRUST_DOMAIN=kluis.dev, and the ones that
// must still work.
func TestServiceIdentity(t *testing.T) {
	t.Parallel()
	ca, err := devpki.NewCA("identity test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePolicy([]byte(identityPolicy))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name        string
		trustDomain string
		cn          string
		uris        []string
		want        string // the service, or "" for a refusal
	}{
		{"a SPIFFE ID naming the service", "kluis.dev", "x", []string{"spiffe://kluis.dev/payments"}, "payments"},
		{"a SPIFFE ID with no path, whatever the CN", "kluis.dev", "payments", []string{"spiffe://kluis.dev"}, ""},
		{"a non-SPIFFE URI with the service's CN", "kluis.dev", "payments", []string{"https://kluis.dev/payments"}, ""},
		{"no URI SAN, the service's CN, and a trust domain", "kluis.dev", "payments", nil, ""},
		{"a trailing slash", "kluis.dev", "payments", []string{"spiffe://kluis.dev/payments/"}, ""},
		{"an empty segment", "kluis.dev", "payments", []string{"spiffe://kluis.dev//payments"}, ""},
		{"percent-encoding", "kluis.dev", "payments", []string{"spiffe://kluis.dev/%70ayments"}, ""},
		{"a query and a fragment", "kluis.dev", "payments", []string{"spiffe://kluis.dev/payments?x#y"}, ""},
		{"an empty fragment", "kluis.dev", "payments", []string{"spiffe://kluis.dev/payments#"}, ""},
		{"userinfo and an upper-case trust domain", "kluis.dev", "payments", []string{"spiffe://user@KLUIS.DEV/payments"}, ""},
		{"another trust domain", "kluis.dev", "payments", []string{"spiffe://evil.example/payments"}, ""},
		{"several URI SANs, the first one good", "kluis.dev", "payments", []string{"spiffe://kluis.dev/payments", "spiffe://kluis.dev/reporting"}, ""},
		{"several URI SANs without a trust domain", "", "payments", []string{"spiffe://evil.example/payments", "spiffe://kluis.dev/payments"}, ""},
		{"a non-SPIFFE URI without a trust domain", "", "payments", []string{"https://kluis.dev/payments"}, ""},
		{"a malformed SPIFFE ID without a trust domain", "", "payments", []string{"spiffe://kluis.dev/payments/"}, ""},
		{"a service the policy does not name", "kluis.dev", "payments", []string{"spiffe://kluis.dev/stranger"}, ""},
		{"a nested path the policy does not name", "kluis.dev", "payments", []string{"spiffe://kluis.dev/ns/payments/sa/api"}, ""},
		{"the full path the policy names", "kluis.dev", "x", []string{"spiffe://kluis.dev/ns/reporting/sa/api"}, "reporting"},
		{"a service with a spiffe_id is not named by its short ID", "kluis.dev", "reporting", []string{"spiffe://kluis.dev/reporting"}, ""},
		{"the CN when there is no URI SAN and no trust domain", "", "payments", nil, "payments"},
		{"any trust domain's single SPIFFE ID without a trust domain", "", "x", []string{"spiffe://other.example/payments"}, "payments"},
		{"no URI SAN and an empty CN", "", "", nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pair, err := ca.ClientWithURIs(tc.cn, tc.uris...)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := pair.Certificate()
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			got, refusal := p.Identify(cert, [][]*x509.Certificate{{cert, ca.Cert}}, tc.trustDomain)
			if got != tc.want {
				t.Fatalf("service = %q (refusal %q), want %q", got, refusal, tc.want)
			}
			if (got == "") != (refusal != "") {
				t.Fatalf("service %q with refusal %q", got, refusal)
			}
		})
	}
}

func TestPolicyRefusesAmbiguousSPIFFEIDs(t *testing.T) {
	t.Parallel()
	for name, doc := range map[string]string{
		"two services, one ID":         "services:\n  a:\n    spiffe_id: /ns/x\n  b:\n    spiffe_id: /ns/x\n",
		"an ID that is another's name": "services:\n  a:\n    spiffe_id: /b\n  b: {}\n",
		"a trailing slash":             "services:\n  a:\n    spiffe_id: /ns/a/\n",
		"a full URI instead of a path": "services:\n  a:\n    spiffe_id: spiffe://kluis.dev/a\n",
		"a percent-encoded path":       "services:\n  a:\n    spiffe_id: /%61\n",
		"a bad serial":                 "revoked:\n  serials: [xyz]\nservices: {}\n",
		"a negative serial":            "revoked:\n  serials: ['-1a']\nservices: {}\n",
		"a pin that is not a SHA-256":  "revoked:\n  spki_sha256: [aGVsbG8=]\nservices: {}\n",
		"a pin that is not base64":     "revoked:\n  spki_sha256: ['!!']\nservices: {}\n",
		"an unknown key under revoked": "revoked:\n  crl: x\nservices: {}\n",
	} {
		if _, err := ParsePolicy([]byte(doc)); err == nil {
			t.Errorf("%s: policy accepted", name)
		}
	}
}
