package main

import (
	"context"
	"os"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/jwtauth"
	"github.com/kluis-dev/kluis/apps"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidlink"
)

// openApps builds the apps in force: KLUIS_APPS_FILE, or the single-app
// settings as the app "default".
func (a *app) openApps(context.Context) error {
	cfg := a.cfg
	if cfg.AppsFile != "" {
		reg, err := apps.Load(cfg.AppsFile, apps.Options{Issuer: cfg.JWTIssuer, StaffAudience: cfg.StaffJWTAudience, Production: cfg.Production()})
		if err != nil {
			return err
		}
		a.apps = reg
		return nil
	}
	secret, err := webhookSecret(cfg.WebhookSecret, cfg.WebhookSecretFile)
	if err != nil {
		return err
	}
	single := apps.Single{Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience, Endpoints: cfg.WebhookEndpoints, Secret: secret,
		AllowedOrigins: cfg.AllowedOrigins, RedirectURIs: cfg.RedirectURIs, Production: cfg.Production(),
		PlaidLink: plaidlink.Settings{ClientName: cfg.PlaidClientName, CountryCodes: cfg.PlaidCountryCodes, Language: cfg.PlaidLanguage,
			RedirectURI: cfg.PlaidRedirectURI, AndroidPackageName: cfg.PlaidAndroidPackageName}}
	if cfg.WebhookPreviousSecretFile != "" {
		if single.Previous, err = webhookSecret("", cfg.WebhookPreviousSecretFile); err != nil {
			return err
		}
		single.PreviousRetireAt = cfg.WebhookPreviousSecretRetireAt
	}
	set, err := apps.Default(single)
	if err != nil {
		return err
	}
	a.apps = apps.Static(set)
	return nil
}

// userVerifiers verifies the user tokens of every app: apps without keys of
// their own share shared's JWKS; one with its own gets a verifier of its
// own, built when the apps file loads (a JWKS that cannot be fetched keeps
// the new file out).
func (a *app) userVerifiers(ctx context.Context, reg *apps.Registry, shared *jwtauth.Verifier) (*api.UserVerifiers, error) {
	u := &api.UserVerifiers{Apps: reg, Shared: shared, Own: func(j apps.JWT) (*jwtauth.Verifier, error) {
		return jwtauth.New(ctx, jwtauth.Options{JWKSURL: j.JWKSURL, JWKSFile: j.JWKSFile, Issuer: j.Issuer,
			UserAudience: j.Audience, StaffAudience: a.cfg.StaffJWTAudience, Logger: a.log})
	}}
	if err := reg.AddCheck(u.Check); err != nil {
		return nil, err
	}
	return u, nil
}

// watchApps keeps the apps file in force (reloaded on change and on hup)
// until ctx ends.
func (a *app) watchApps(ctx context.Context, hup <-chan os.Signal) {
	if a.apps == nil || !a.apps.FromFile() {
		return
	}
	a.apps.Watch(ctx, apps.PollInterval, hup, a.log)
}
