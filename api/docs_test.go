package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/api/apitest"
)

func TestTheAPIReferenceIsServedOnBothListenersWithoutScripts(t *testing.T) {
	t.Parallel()
	env := startEverything(t)
	doc, err := apitest.LoadContract(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct {
		name string
		c    *http.Client
		url  string
	}{
		{"public", nil, env.Public.URL},
		{"internal", env.ServiceClient(t, "payments"), env.Internal.URL},
	} {
		t.Run(l.name, func(t *testing.T) {
			status, h, page := apitest.Do(t, l.c, "GET", l.url+"/docs", "", "", "")
			if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
				t.Fatalf("GET /docs = %d %q", status, h.Get("Content-Type"))
			}
			checkDocsPage(t, h, page)
			for path, item := range doc.Paths.Map() {
				for method, op := range item.Operations() {
					if !strings.Contains(page, `id="`+op.OperationID+`"`) {
						t.Errorf("the reference does not describe %s %s (%s)", method, path, op.OperationID)
					}
				}
			}
		})
	}
}

// checkDocsPage checks what makes the page safe to open: no script of any
// kind, nothing loaded from anywhere, and a policy that allows only its own
// inline style.
func checkDocsPage(t *testing.T, h http.Header, page string) {
	t.Helper()
	lower := strings.ToLower(page)
	for _, banned := range []string{"<script", "javascript:", " on", "<iframe", "<img", "<link", "src=", "@import", "url("} {
		if banned == " on" {
			if m := regexp.MustCompile(`<[^>]*\son[a-z]+=`).FindString(lower); m != "" {
				t.Errorf("the page has an event handler attribute: %s", m)
			}
			continue
		}
		if strings.Contains(lower, banned) {
			t.Errorf("the page contains %q", banned)
		}
	}
	for _, m := range regexp.MustCompile(`href="([^"]*)"`).FindAllStringSubmatch(page, -1) {
		if href := m[1]; !strings.HasPrefix(href, "#") && href != "/openapi.yaml" {
			t.Errorf("the page links outside itself and its contract: %q", href)
		}
	}
	styles := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindAllStringSubmatch(page, -1)
	if len(styles) != 1 {
		t.Fatalf("the page has %d style elements, want 1", len(styles))
	}
	sum := sha256.Sum256([]byte(styles[0][1]))
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{
		"default-src 'none'",
		"style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'",
		"base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
	} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "script-src") || strings.Contains(csp, "unsafe") {
		t.Errorf("Content-Security-Policy %q allows scripts or unsafe sources", csp)
	}
}
