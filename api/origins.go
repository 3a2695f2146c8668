package api

import (
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
)

// Origins says which browser origins are the frontend apps' (scheme, host
// and port, as an Origin header carries them). They alone may frame the
// hosted pages, receive their postMessage, be sent back to by a redirect,
// and call /v1 from a browser. It is an interface so that a per-app origin
// list (an apps file) can replace the one setting.
type Origins interface {
	// Allowed reports whether origin (canonical, as a browser sends it)
	// is one of the apps'.
	Allowed(origin string) bool
	// List returns every allowed origin, for the Content-Security-Policy.
	List() []string
}

// StaticOrigins is a fixed list of canonical origins (KLUIS_APP_ORIGINS,
// config.CanonicalOrigin).
type StaticOrigins []string

// Allowed implements Origins.
func (o StaticOrigins) Allowed(origin string) bool { return origin != "" && slices.Contains(o, origin) }

// List implements Origins.
func (o StaticOrigins) List() []string { return slices.Clone(o) }

// corsAllowHeaders and corsExposeHeaders are what a browser app may send
// to and read from /v1.
const (
	corsAllowMethods  = "GET, POST, DELETE"
	corsAllowHeaders  = "Authorization, Content-Type, Idempotency-Key"
	corsExposeHeaders = "X-Request-Id, Retry-After"
	corsMaxAge        = "600"
)

// cors answers browsers' cross-origin calls to /v1 (the JSON API): a
// preflight from an app origin gets the methods and headers the API takes;
// an actual request from one gets Access-Control-Allow-Origin naming it.
// Any other origin gets no CORS header at all (and a refused preflight), so
// the browser keeps its answer from the page. No credentials mode: apps
// send a bearer token, never cookies. It runs before routing (echo Pre), as
// a preflight is an OPTIONS no route has.
func (d *Deps) cors(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		origin := r.Header.Get("Origin")
		if !strings.HasPrefix(r.URL.Path, "/v1/") || origin == "" {
			return next(c)
		}
		h := c.Response().Header()
		h.Add("Vary", "Origin")
		allowed := d.Origins != nil && d.Origins.Allowed(origin)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Add("Vary", "Access-Control-Request-Method, Access-Control-Request-Headers")
			h.Set("Cache-Control", "no-store")
			h.Set("X-Content-Type-Options", "nosniff")
			if !allowed {
				return c.NoContent(http.StatusForbidden)
			}
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Methods", corsAllowMethods)
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", corsMaxAge)
			return c.NoContent(http.StatusNoContent)
		}
		if allowed {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		}
		return next(c)
	}
}
