package console

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/labstack/echo/v4"
	"golang.org/x/oauth2"
)

// oidcClient signs staff in at the identity provider: authorization code
// with PKCE (S256), state and nonce, the ID token verified by go-oidc.
type oidcClient struct {
	cfg      oauth2.Config
	verifier *oidc.IDTokenVerifier
	client   *http.Client
}

func newOIDC(ctx context.Context, cfg Config) (*oidcClient, error) {
	client := cfg.IdPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	ctx = oidc.ClientContext(ctx, client)
	provider, err := oidc.NewProvider(ctx, cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("console: discover the identity provider: %w", err)
	}
	return &oidcClient{
		cfg: oauth2.Config{
			ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, Endpoint: provider.Endpoint(),
			RedirectURL: cfg.PublicURL + "/callback", Scopes: append([]string{oidc.ScopeOpenID}, cfg.Scopes...),
		},
		verifier: provider.Verifier(&oidc.Config{ClientID: cfg.ClientID}),
		client:   client,
	}, nil
}

// login sends the browser to the identity provider. `?fresh=1` asks it to
// authenticate the staff member again (max_age=0), which the compliance
// actions need when their last sign-in is too old (mfa_stale).
func (s *Server) login(c echo.Context) error {
	state, verifier, nonce, binding := random(32), oauth2.GenerateVerifier(), random(32), random(32)
	s.sessions.startLogin(state, pendingLogin{
		verifier: verifier, nonce: nonce, binding: sha256.Sum256([]byte(binding)),
		next: safeNext(c.QueryParam("next")), started: time.Now(),
	})
	setCookie(c, loginCookie, binding, http.SameSiteLaxMode, int(maxPendingLogin.Seconds()))
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)}
	if c.QueryParam("fresh") == "1" {
		opts = append(opts, oauth2.SetAuthURLParam("max_age", "0"), oauth2.SetAuthURLParam("prompt", "login"))
	}
	return c.Redirect(http.StatusFound, s.oidc.cfg.AuthCodeURL(state, opts...))
}

// callback finishes a sign-in: the state must be one this browser started
// (its login cookie), the code is exchanged with the PKCE verifier, the ID
// token must verify with the nonce. The access token, for kluis, stays in
// the session on the server.
func (s *Server) callback(c echo.Context) error {
	if e := c.QueryParam("error"); e != "" {
		return echo.NewHTTPError(http.StatusUnauthorized, "The identity provider did not sign you in.")
	}
	p, ok := s.sessions.finishLogin(c.QueryParam("state"))
	ck, err := c.Cookie(loginCookie)
	if !ok || err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "This sign-in was not started here, or took too long. Sign in again.")
	}
	if sum := sha256.Sum256([]byte(ck.Value)); subtle.ConstantTimeCompare(sum[:], p.binding[:]) != 1 {
		return echo.NewHTTPError(http.StatusBadRequest, "This sign-in was not started in this browser. Sign in again.")
	}
	setCookie(c, loginCookie, "", http.SameSiteLaxMode, -1)
	ctx := oidc.ClientContext(c.Request().Context(), s.oidc.client)
	tok, err := s.oidc.cfg.Exchange(ctx, c.QueryParam("code"), oauth2.VerifierOption(p.verifier))
	if err != nil {
		s.log.Warn("console sign-in: code exchange failed", "cause", err.Error())
		return echo.NewHTTPError(http.StatusUnauthorized, "The identity provider did not sign you in.")
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := s.oidc.verifier.Verify(ctx, rawID)
	if err != nil || subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(p.nonce)) != 1 || tok.AccessToken == "" {
		s.log.Warn("console sign-in: bad ID token", "cause", fmt.Sprint(err))
		return echo.NewHTTPError(http.StatusUnauthorized, "The identity provider did not sign you in.")
	}
	id, _ := s.sessions.create(idt.Subject, tok.AccessToken, tok.Expiry)
	setCookie(c, sessionCookie, id, http.SameSiteStrictMode, 0)
	// A page rather than a redirect: after the provider's cross-site
	// navigation the browser would not send the SameSite=Strict cookie on
	// a redirect, but does on this page's own same-site refresh.
	return s.render(c, http.StatusOK, "signed-in", pageData{Title: "Signed in", Next: p.next})
}

// logout ends the session here (the provider's own session is its own).
func (s *Server) logout(c echo.Context) error {
	if ck, err := c.Cookie(sessionCookie); err == nil {
		s.sessions.end(ck.Value)
	}
	setCookie(c, sessionCookie, "", http.SameSiteStrictMode, -1)
	return s.render(c, http.StatusOK, "signed-out", pageData{Title: "Signed out"})
}
