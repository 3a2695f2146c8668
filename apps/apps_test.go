package apps

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const secret = "0123456789abcdef0123456789abcdef-secret"

// readSecrets serves every secret file from memory.
func readSecrets(name string) ([]byte, error) {
	if strings.HasPrefix(name, "/missing") {
		return nil, os.ErrNotExist
	}
	if strings.HasPrefix(name, "/short") {
		return []byte("short\n"), nil
	}
	return []byte(secret + "-" + name + "\n"), nil
}

var testOptions = Options{Issuer: "https://id.example", StaffAudience: "kluis-staff", ReadFile: readSecrets}

const twoApps = `
apps:
  consumer:
    jwt: {audience: consumer}
    allowed_origins: [https://app.example]
    redirect_uris: [https://app.example/done]
    plaid_link: {client_name: Consumer, country_codes: [US, CA], language: en}
    events:
      endpoints:
        - id: main
          url: https://hooks.example/kluis?token=t0k3n
          secrets:
            - file: /new
            - {file: /old, retire_at: 2030-01-01T00:00:00Z}
  merchant:
    jwt: {issuer: https://other.example, audience: merchant, jwks_url: https://other.example/jwks.json}
`

func TestAnAppsFileParses(t *testing.T) {
	set, _, err := Parse([]byte(twoApps), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(set.IDs(), ","); got != "consumer,merchant" {
		t.Fatalf("ids = %s", got)
	}
	c, _ := set.App("consumer")
	if c.JWT.Issuer != "https://id.example" || c.JWT.OwnKeys() {
		t.Fatalf("consumer's JWT = %+v: the global issuer and keys apply", c.JWT)
	}
	if !c.AllowsOrigin("https://app.example") || c.AllowsOrigin("https://app.example.evil") || !c.AllowsRedirect("https://app.example/done") || c.AllowsRedirect("https://app.example/done/../x") {
		t.Fatal("origins and redirect URIs match exactly")
	}
	e := c.Endpoints[0]
	if e.Key != "consumer/main" || e.App != "consumer" || e.Display() != "https://hooks.example/kluis" {
		t.Fatalf("endpoint = %+v (display %s)", e, e.Display())
	}
	before := time.Date(2029, 12, 31, 0, 0, 0, 0, time.UTC)
	after := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if n := len(e.Active(before)); n != 2 {
		t.Fatalf("%d secrets sign before the old one retires, want 2", n)
	}
	if act := e.Active(after); len(act) != 1 || !strings.HasSuffix(string(act[0]), "/new") {
		t.Fatalf("after the date only the new secret signs: %d", len(act))
	}
}

func TestATokenMatchesExactlyOneApp(t *testing.T) {
	set, _, err := Parse([]byte(twoApps), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		iss  string
		aud  []string
		want string
		err  error
	}{
		{"the consumer's", "https://id.example", []string{"consumer"}, "consumer", nil},
		{"the merchant's, among other audiences", "https://other.example", []string{"x", "merchant"}, "merchant", nil},
		{"the right audience from the wrong issuer", "https://other.example", []string{"consumer"}, "", ErrNoApp},
		{"no app's audience", "https://id.example", []string{"kluis"}, "", ErrNoApp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := set.ForToken(tc.iss, tc.aud)
			if !errors.Is(err, tc.err) || (err == nil && a.ID != tc.want) {
				t.Fatalf("ForToken = %v, %v", a, err)
			}
		})
	}
	same, _, err := Parse([]byte("apps:\n  a: {jwt: {audience: x}}\n  b: {jwt: {audience: y}}\n"), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := same.ForToken("https://id.example", []string{"x", "y"}); !errors.Is(err, ErrAmbiguousApp) {
		t.Fatalf("a token naming two apps' audiences: %v, want ErrAmbiguousApp", err)
	}
}

func TestABadAppsFileIsRefusedNamingTheProblem(t *testing.T) {
	for _, tc := range []struct{ name, file, want string }{
		{"unknown key", "apps:\n  a: {jwt: {audience: x}, colour: red}\n", "colour"},
		{"no apps", "apps: {}\n", "no app"},
		{"bad app id", "apps:\n  Bad: {jwt: {audience: x}}\n", "app id"},
		{"no audience", "apps:\n  a: {jwt: {issuer: https://i}}\n", "jwt.audience is required"},
		{"the staff audience", "apps:\n  a: {jwt: {audience: kluis-staff}}\n", "KLUIS_STAFF_JWT_AUDIENCE"},
		{"two apps, one issuer and audience", "apps:\n  a: {jwt: {audience: x}}\n  b: {jwt: {audience: x}}\n", "same JWT issuer and audience"},
		{"plain http origin", "apps:\n  a: {jwt: {audience: x}, allowed_origins: [\"http://app.example\"]}\n", "allowed_origins[0] must be https"},
		{"an origin with a path", "apps:\n  a: {jwt: {audience: x}, allowed_origins: [\"https://app.example/x\"]}\n", "origin is scheme"},
		{"a redirect with a fragment", "apps:\n  a: {jwt: {audience: x}, redirect_uris: [\"https://app.example/#x\"]}\n", "fragment"},
		{"bad Plaid language", "apps:\n  a: {jwt: {audience: x}, plaid_link: {language: xx}}\n", "plaid_link.language"},
		{"an endpoint without secrets", "apps:\n  a: {jwt: {audience: x}, events: {endpoints: [{id: m, url: \"https://h.example\"}]}}\n", "1 to 2 secrets"},
		{"an unreadable secret", "apps:\n  a: {jwt: {audience: x}, events: {endpoints: [{id: m, url: \"https://h.example\", secrets: [{file: /missing}]}]}}\n", "cannot be read"},
		{"a short secret", "apps:\n  a: {jwt: {audience: x}, events: {endpoints: [{id: m, url: \"https://h.example\", secrets: [{file: /short}]}]}}\n", "at least 32 bytes"},
		{"two secrets without a date", "apps:\n  a: {jwt: {audience: x}, events: {endpoints: [{id: m, url: \"https://h.example\", secrets: [{file: /a}, {file: /b}]}]}}\n", "exactly one (the old) has retire_at"},
		{"an endpoint URL that is not one", "apps:\n  a: {jwt: {audience: x}, events: {endpoints: [{id: m, url: \"ftp://h.example/?token=zzsecret\", secrets: [{file: /a}]}]}}\n", "url is not"},
		{"duplicate endpoint ids", "apps:\n  a: {jwt: {audience: x}, events: {endpoints: [{id: m, url: \"https://h.example\", secrets: [{file: /a}]}, {id: m, url: \"https://i.example\", secrets: [{file: /a}]}]}}\n", "used twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tc.file), testOptions)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one mentioning %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "zzsecret") || strings.Contains(err.Error(), secret) {
				t.Fatalf("the error repeats a secret: %v", err)
			}
		})
	}
}

func TestProductionRefusesPlainHTTPThatDevelopmentAllowsOnLocalhost(t *testing.T) {
	file := "apps:\n  a: {jwt: {audience: x}, redirect_uris: [\"http://localhost:3000/done\"]}\n"
	if _, _, err := Parse([]byte(file), testOptions); err != nil {
		t.Fatalf("development: %v", err)
	}
	prod := testOptions
	prod.Production = true
	if _, _, err := Parse([]byte(file), prod); err == nil {
		t.Fatal("production took a plain-http redirect URI")
	}
}

func TestAReloadPutsAGoodFileInForceAndKeepsTheAppsOnABadOne(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "apps.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("apps:\n  a: {jwt: {audience: x}}\n")
	reg, err := Load(path, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := reg.Reload(); changed || err != nil {
		t.Fatalf("an unchanged file: %v, %v", changed, err)
	}
	write("apps:\n  a: {jwt: {audience: x}}\n  b: {jwt: {audience: y}}\n")
	if changed, err := reg.Reload(); !changed || err != nil || reg.Current().Len() != 2 {
		t.Fatalf("a good change: %v, %v, %d apps", changed, err, reg.Current().Len())
	}
	write("apps:\n  a: {jwt: {audience: x}, oops: 1}\n")
	if _, err := reg.Reload(); err == nil || reg.Current().Len() != 2 {
		t.Fatalf("a bad file: %v; %d apps in force, want the 2 of before", err, reg.Current().Len())
	}
	// A check that refuses the new apps (keys that cannot be fetched) keeps
	// the old ones too.
	if err := reg.AddCheck(func(s *Set) error {
		if _, ok := s.App("c"); ok {
			return errors.New("c's keys cannot be fetched")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	write("apps:\n  c: {jwt: {audience: z}}\n")
	if _, err := reg.Reload(); err == nil || reg.Current().Len() != 2 {
		t.Fatalf("a refused file: %v; %d apps in force", err, reg.Current().Len())
	}
	_, ok := reg.App("a")
	if !ok {
		t.Fatal("the apps in force lost a")
	}
}

func TestWatchReloadsOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "apps.yaml")
	if err := os.WriteFile(path, []byte("apps:\n  a: {jwt: {audience: x}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg, err := Load(path, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan os.Signal)
	done := make(chan struct{})
	go func() { defer close(done); reg.Watch(ctx, time.Hour, hup, slog.New(slog.DiscardHandler)) }()
	if err := os.WriteFile(path, []byte("apps:\n  b: {jwt: {audience: x}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup <- os.Interrupt // any signal value: the channel is what counts
	hup <- os.Interrupt // the second send returns once the first reload is done
	cancel()
	<-done
	if _, ok := reg.App("b"); !ok {
		t.Fatalf("after SIGHUP the apps are %v", reg.Current().IDs())
	}
}

func TestTheSingleAppSettingsAreTheDefaultApp(t *testing.T) {
	set, err := Default(Single{Issuer: "https://id.example", Audience: "kluis", Endpoints: []string{"https://h.example/x?token=1", "https://h.example/x?token=1"},
		Secret: []byte(secret), Previous: []byte(secret + "-old"), PreviousRetireAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	a, ok := set.Only()
	if !ok || a.ID != "default" || len(a.Endpoints) != 1 {
		t.Fatalf("default app = %+v", a)
	}
	if e := a.Endpoints[0]; len(e.Key) != 24 || e.Key != e.ID || len(e.Active(time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC))) != 2 {
		t.Fatalf("endpoint = %+v: keyed by the URL's hash as before apps, signing with both secrets until the date", e)
	}
	if _, err := Default(Single{Endpoints: []string{"https://h.example"}}); err == nil {
		t.Fatal("endpoints without a secret")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(twoApps))
	f.Add([]byte("apps:\n  a: {jwt: {audience: x}}\n"))
	f.Add([]byte("apps:\n  a: {jwt: {audience: x}, events: {endpoints: [{id: m, url: \"https://h.example\", secrets: [{file: /a}]}]}}\n"))
	f.Add([]byte("apps: [1, 2]"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		set, _, err := Parse(raw, testOptions)
		if err != nil {
			return
		}
		// Whatever parses holds together: valid ids, one app per token
		// issuer and audience, endpoints that can sign.
		for _, id := range set.IDs() {
			a, _ := set.App(id)
			if !validID(a.ID) || a.JWT.Audience == "" || a.JWT.Issuer == "" {
				t.Fatalf("app %+v", a)
			}
			for _, e := range a.Endpoints {
				if len(e.Secrets) == 0 || e.App != id {
					t.Fatalf("endpoint %+v", e)
				}
			}
		}
	})
}
