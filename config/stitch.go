package config

import (
	"net/url"
	"strings"
	"time"

	"github.com/kluis-dev/kluis/verification"
)

// DefaultStitchKeepAliveAfter is KLUIS_STITCH_KEEPALIVE_AFTER's default:
// 30 days before Stitch's refresh tokens expire unused (365 days), so that
// a month of failed keep-alive runs still leaves the item alive.
const DefaultStitchKeepAliveAfter = 335 * 24 * time.Hour

// readStitch reads Stitch's settings (used when KLUIS_BANK_PROVIDERS names
// stitch): STITCH_BASE_URL and STITCH_AUTH_URL default to Stitch's
// production API and identity server.
func (c *Config) readStitch(r *reader) {
	c.StitchClientID = r.str("STITCH_CLIENT_ID", "")
	c.StitchClientSecret = r.str("STITCH_CLIENT_SECRET", "")
	c.StitchBaseURL = r.str("STITCH_BASE_URL", "https://api.stitch.money")
	c.StitchAuthURL = r.str("STITCH_AUTH_URL", "https://secure.stitch.money")
	c.StitchRedirectURI = r.str("KLUIS_STITCH_REDIRECT_URI", "")
	c.StitchWebhookSecret = r.str("STITCH_WEBHOOK_SECRET", "")
	// A day short of the 365-day expiry at most, so that a daily run
	// always comes before it; seconds at least, for tests.
	c.StitchKeepAliveAfter = r.duration("KLUIS_STITCH_KEEPALIVE_AFTER", DefaultStitchKeepAliveAfter, time.Second, 364*24*time.Hour)
	checks, err := verification.ParseRequiredChecks(r.str("KLUIS_BAV_REQUIRED_CHECKS", ""))
	if err != nil {
		r.bad("KLUIS_BAV_REQUIRED_CHECKS", "must be a comma-separated list of "+strings.Join(verification.AllChecks, ", "))
	}
	c.BAVRequiredChecks = checks
}

// validateStitch checks Stitch's settings when stitch is configured.
func (c *Config) validateStitch(r *reader) {
	r.require("STITCH_CLIENT_ID", c.StitchClientID)
	r.require("STITCH_CLIENT_SECRET", c.StitchClientSecret)
	r.require("KLUIS_STITCH_REDIRECT_URI", c.StitchRedirectURI)
	for name, v := range map[string]string{"STITCH_BASE_URL": c.StitchBaseURL, "STITCH_AUTH_URL": c.StitchAuthURL,
		"KLUIS_STITCH_REDIRECT_URI": c.StitchRedirectURI} {
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.RawQuery != "" {
			r.bad(name, "must be an https URL")
		}
	}
	if c.StitchRedirectURI != "" && !strings.HasSuffix(c.StitchRedirectURI, "/link/callback/stitch") {
		r.bad("KLUIS_STITCH_REDIRECT_URI", "must be kluis's public callback: https://<public host>/link/callback/stitch")
	}
	if c.StitchWebhookSecret != "" && !strings.HasPrefix(c.StitchWebhookSecret, "whsec_") {
		r.bad("STITCH_WEBHOOK_SECRET", "must be the whsec_… secret Stitch gives for the endpoint")
	}
}
