package main

import (
	"fmt"

	"github.com/kluis-dev/kluis/banklink/stitch"
	"github.com/kluis-dev/kluis/vault"
)

// stitchProvider builds the Stitch adapter. Its PKCE key (from which each
// link session's verifier is derived) comes from the system keys, so every
// instance derives the same verifier for a session without storing it.
func (a *app) stitchProvider() (*stitch.Provider, error) {
	key, err := a.sys.MAC(vault.SystemKeyVerification, []byte("kluis/banklink/stitch-pkce"))
	if err != nil {
		return nil, fmt.Errorf("stitch PKCE key: %w", err)
	}
	return stitch.New(stitch.Options{ClientID: a.cfg.StitchClientID, ClientSecret: a.cfg.StitchClientSecret,
		BaseURL: a.cfg.StitchBaseURL, AuthURL: a.cfg.StitchAuthURL, RedirectURI: a.cfg.StitchRedirectURI,
		WebhookSecret: a.cfg.StitchWebhookSecret, PKCEKey: key})
}
