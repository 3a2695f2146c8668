package config

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Hosted pages and browser apps (docs/HOSTED.md).
//
//   - KLUIS_PUBLIC_URL: the public listener's address as browsers reach it
//     (https://kluis.example.com); hosted_link_url and hosted_verify_url
//     start with it. Default: http:// and KLUIS_PUBLIC_ADDR (development);
//     production requires https once it is set.
//   - KLUIS_APP_ORIGINS: comma-separated origins of the frontend apps
//     (https://app.example.com): the only sites that may frame the hosted
//     pages, receive their postMessage, be redirected back to, and call /v1
//     from a browser (CORS). Default: none.
//   - KLUIS_HOSTED_PAGE_TTL: how long a page token may wait to be opened and
//     the opened page be used (default 30m).
//   - KLUIS_PLAID_LINK_SCRIPT_URL: where the hosted Plaid step loads Plaid
//     Link's script (default Plaid's own URL; https in production), and
//     KLUIS_PLAID_LINK_SCRIPT_INTEGRITY its subresource-integrity value
//     (sha256-, sha384- or sha512-; default none: Plaid changes its script
//     without notice).
func (c *Config) readHosted(r *reader) {
	c.PublicURL = strings.TrimRight(r.str("KLUIS_PUBLIC_URL", "http://"+c.PublicAddr), "/")
	if _, err := CanonicalOrigin(c.PublicURL); err != nil {
		r.bad("KLUIS_PUBLIC_URL", "must be an http(s) origin, such as https://kluis.example.com: "+err.Error())
	} else if c.Production() && r.getenv("KLUIS_PUBLIC_URL") != "" && !strings.HasPrefix(c.PublicURL, "https://") {
		r.bad("KLUIS_PUBLIC_URL", "production requires https")
	}
	for _, o := range strings.Split(r.str("KLUIS_APP_ORIGINS", ""), ",") {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		canon, err := CanonicalOrigin(o)
		switch {
		case err != nil:
			r.bad("KLUIS_APP_ORIGINS", err.Error())
		case c.Production() && !strings.HasPrefix(canon, "https://"):
			r.bad("KLUIS_APP_ORIGINS", "production requires https origins")
		default:
			c.AppOrigins = append(c.AppOrigins, canon)
		}
	}
	c.HostedPageTTL = r.duration("KLUIS_HOSTED_PAGE_TTL", 30*time.Minute, time.Minute, 24*time.Hour)
	c.readPlaidLinkScript(r)
}

// readPlaidLinkScript reads KLUIS_PLAID_LINK_SCRIPT_URL and _INTEGRITY.
func (c *Config) readPlaidLinkScript(r *reader) {
	c.PlaidLinkScriptURL = r.str("KLUIS_PLAID_LINK_SCRIPT_URL", "")
	if raw := c.PlaidLinkScriptURL; raw != "" {
		u, err := url.Parse(raw)
		switch {
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.Fragment != "":
			r.bad("KLUIS_PLAID_LINK_SCRIPT_URL", "must be an absolute http(s) URL without userinfo or fragment")
		case c.Production() && u.Scheme != "https":
			r.bad("KLUIS_PLAID_LINK_SCRIPT_URL", "production requires https")
		}
	}
	c.PlaidLinkScriptIntegrity = r.str("KLUIS_PLAID_LINK_SCRIPT_INTEGRITY", "")
	if v := c.PlaidLinkScriptIntegrity; v != "" && !validIntegrity(v) {
		r.bad("KLUIS_PLAID_LINK_SCRIPT_INTEGRITY", "must be sha256-, sha384- or sha512- followed by the digest in base64")
	}
}

// validIntegrity says whether v is one subresource-integrity value.
func validIntegrity(v string) bool {
	alg, digest, ok := strings.Cut(v, "-")
	size := map[string]int{"sha256": 32, "sha384": 48, "sha512": 64}[alg]
	if !ok || size == 0 {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(digest)
	return err == nil && len(b) == size
}

// CanonicalOrigin returns an origin as browsers send it in an Origin
// header: scheme and host in lower case, the port only when it is not the
// scheme's default, no path, query, fragment or userinfo. Anything else
// (no scheme, another scheme, a path, a wildcard) is an error naming why.
func CanonicalOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q is not an http(s) origin", s)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.Contains(u.Host, "*") {
		return "", fmt.Errorf("%q is not an origin: scheme, host and port only", s)
	}
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return strings.ToLower(u.Scheme) + "://" + host, nil
}
