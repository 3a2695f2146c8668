package main

import (
	"context"
	"fmt"
	"time"

	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/stitch"
	"github.com/kluis-dev/kluis/jobs"
)

// stitchProvider builds the Stitch adapter. Its PKCE key (from which each
// link session's verifier is derived) comes from the system keys, so every
// instance derives the same verifier for a session without storing it;
// from banklink.SystemKeyHeld, because Stitch holds the code challenge of
// each authorization under way, and a verifier derived under another key
// would not answer it.
func (a *app) stitchProvider() (*stitch.Provider, error) {
	key, err := a.sys.MAC(banklink.SystemKeyHeld, []byte("kluis/banklink/stitch-pkce"))
	if err != nil {
		return nil, fmt.Errorf("stitch PKCE key: %w", err)
	}
	return stitch.New(stitch.Options{ClientID: a.cfg.StitchClientID, ClientSecret: a.cfg.StitchClientSecret,
		BaseURL: a.cfg.StitchBaseURL, AuthURL: a.cfg.StitchAuthURL, RedirectURI: a.cfg.StitchRedirectURI,
		WebhookSecret: a.cfg.StitchWebhookSecret, PKCEKey: key})
}

// registerStitchKeepAlive adds the refresh-token keep-alive: daily, it
// renews the refresh token of every Stitch item no refresh has renewed for
// KLUIS_STITCH_KEEPALIVE_AFTER (banklink.Service.KeepAliveTokens), so that
// an item nobody reveals does not die at Stitch. Without Stitch configured
// it finds nothing to do. Its counts are in job_runs and in /metrics
// (kluis_job_last_run_count{job="bank-token-keepalive"}).
func (a *app) registerStitchKeepAlive(s *jobs.Scheduler) error {
	svc, idle := a.bank, a.cfg.StitchKeepAliveAfter
	return s.Register(jobs.Job{
		Name: banklink.JobTokenKeepAlive, Schedule: "53 4 * * *", Timeout: 2 * time.Hour,
		Run: func(ctx context.Context, run *jobs.Run) error {
			res, err := svc.KeepAliveTokens(ctx, idle, 0)
			run.Set("renewed", int64(res.Renewed))
			run.Set("finished", int64(res.Finished))
			run.Set("relink_required", int64(res.RelinkRequired))
			run.Set("login_required", int64(res.LoginRequired))
			run.Set("failed", int64(res.Failed))
			if err == nil && res.Failed > 0 {
				err = fmt.Errorf("%d refresh tokens could not be renewed; the next run retries them", res.Failed)
			}
			return err
		},
	})
}
