// Package console is the compliance staff's console (`kluis console`): a
// server-rendered web app on its own listener. Staff sign in through OpenID
// Connect (authorization code with PKCE) at the staff identity provider; the
// console keeps their token server-side behind a session cookie and calls
// kluis's compliance API over mutual TLS with the console's certificate, so
// the browser holds neither the token nor the certificate.
//
// Every page is html/template with no inline script or style under a strict
// Content-Security-Policy, and every form carries a CSRF token bound to the
// session and is refused from another origin.
package console

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/console.css
var stylesheet []byte

// Config is what the console needs. Every field but ClientSecret, Logger and
// HTTPClient is required.
type Config struct {
	// PublicURL is where staff reach the console (https://…); the OIDC
	// redirect URI is PublicURL + "/callback", and forms must come from its
	// origin.
	PublicURL string
	// Issuer is the staff identity provider's OIDC issuer URL, ClientID and
	// ClientSecret (empty for a public client: PKCE alone) the console's
	// registration there. Scopes are asked for beside "openid" (the
	// provider must put roles, amr and auth_time in the access token).
	Issuer       string
	ClientID     string
	ClientSecret string
	Scopes       []string
	// APIURL is kluis's internal listener (https://…); APITLS carries the
	// console's client certificate and the CA that signed kluis's.
	APIURL string
	APITLS *tls.Config
	// IdPClient, when set, is the HTTP client for the identity provider
	// (tests trust their own CA with it).
	IdPClient *http.Client
	// SessionMaxAge bounds a session whatever the token says (default 8h).
	SessionMaxAge time.Duration
	Logger        *slog.Logger
}

// Server is the console.
type Server struct {
	cfg      Config
	origin   string
	log      *slog.Logger
	pages    *template.Template
	sessions *sessions
	oidc     *oidcClient
	api      *apiClient
	echo     *echo.Echo
}

// New checks cfg, discovers the identity provider and builds the console.
func New(ctx context.Context, cfg Config) (*Server, error) {
	u, err := url.Parse(cfg.PublicURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, errors.New("console: the public URL must be https://host[:port]")
	}
	if cfg.APIURL == "" || cfg.APITLS == nil || cfg.Issuer == "" || cfg.ClientID == "" {
		return nil, errors.New("console: the API URL and TLS, the issuer and the client id are required")
	}
	if cfg.SessionMaxAge <= 0 {
		cfg.SessionMaxAge = 8 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	pages, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	oc, err := newOIDC(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, origin: u.Scheme + "://" + u.Host, log: cfg.Logger.With("component", "console"),
		pages: pages, sessions: newSessions(cfg.SessionMaxAge), oidc: oc, api: newAPIClient(cfg.APIURL, cfg.APITLS),
	}
	s.echo = s.routes()
	return s, nil
}

// Handler serves the console.
func (s *Server) Handler() http.Handler { return s.echo }

// routes lists every route of the console.
func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorPage
	e.Use(s.headers)
	e.GET("/console.css", s.css)
	e.GET("/login", s.login)
	e.GET("/callback", s.callback)
	signed := e.Group("", s.requireSession)
	signed.GET("/", s.erasures)
	signed.POST("/erasures", s.requestErasure, s.checkForm)
	signed.POST("/erasures/:id/:action", s.erasureAction, s.checkForm)
	signed.GET("/holds", s.holds)
	signed.POST("/holds", s.placeHold, s.checkForm)
	signed.POST("/holds/:id/lift", s.liftHold, s.checkForm)
	signed.GET("/subjects", s.subject)
	signed.POST("/subjects/export", s.export, s.checkForm)
	signed.GET("/audit", s.audit)
	signed.POST("/audit/verify", s.verifyAudit, s.checkForm)
	signed.POST("/logout", s.logout, s.checkForm)
	return e
}

// csp allows the console's own stylesheet and nothing else: no script at
// all, no framing, forms to itself only.
const csp = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// headers sets the console's security headers on every answer.
func (s *Server) headers(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// same-origin, not no-referrer: with no-referrer browsers send
		// "Origin: null" on form posts, and checkForm needs the origin.
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		h.Set("Strict-Transport-Security", "max-age=31536000")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		return next(c)
	}
}

func (s *Server) css(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "public, max-age=3600")
	return c.Blob(http.StatusOK, "text/css; charset=utf-8", stylesheet)
}

// errorPage renders any error as a page saying what it can, never the cause.
func (s *Server) errorPage(err error, c echo.Context) {
	status, msg := http.StatusInternalServerError, "Something went wrong. Try again."
	var he *echo.HTTPError
	if errors.As(err, &he) {
		status = he.Code
		if m, ok := he.Message.(string); ok {
			msg = m
		} else {
			msg = http.StatusText(status)
		}
	} else {
		s.log.Error("console request failed", "cause", err.Error())
	}
	if c.Response().Committed {
		return
	}
	_ = s.render(c, status, "error", pageData{Title: "Error", Error: msg})
}

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"short": func(s string) string {
		if len(s) > 14 {
			return s[:14] + "…"
		}
		return s
	},
	"when": func(s string) string {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return s
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"title": func(s string) string { return strings.ReplaceAll(s, "_", " ") },
}
