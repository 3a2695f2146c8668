package config_test

import (
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/config"
)

// FuzzCanonicalOrigin: whatever it accepts is an http(s) origin with no
// path, query, fragment or userinfo, and canonical (accepted again as is).
func FuzzCanonicalOrigin(f *testing.F) {
	for _, s := range []string{"https://app.example.com", "http://127.0.0.1:8090", "HTTPS://A.B:443/", "http://[::1]:80",
		"https://u@h", "javascript:x", "https://*.x", "null", "https://h/p?q#f", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := config.CanonicalOrigin(in)
		if err != nil {
			return
		}
		if !strings.HasPrefix(out, "http://") && !strings.HasPrefix(out, "https://") {
			t.Fatalf("%q → %q: not http(s)", in, out)
		}
		rest := out[strings.Index(out, "//")+2:]
		if strings.ContainsAny(rest, "/?#@*") {
			t.Fatalf("%q → %q: not an origin", in, out)
		}
		again, err := config.CanonicalOrigin(out)
		if err != nil || again != out {
			t.Fatalf("%q → %q → %q, %v: not canonical", in, out, again, err)
		}
	})
}
