package config

import (
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
