package main

import (
	"context"
	"fmt"
	"time"

	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/jobs"
)

// registerPlaidJobs adds the jobs of issue 14: items whose reads after the
// exchange failed or were not ready are completed (bank-item-completion),
// and items whose recorded webhook URL differs from KLUIS_BANK_WEBHOOK_URL
// are told the new one (bank-webhook-update).
func registerPlaidJobs(a *app, s *jobs.Scheduler, svc *banklink.Service) error {
	if err := s.Register(jobs.Job{
		Name: "bank-item-completion", Schedule: "* * * * *", Timeout: 5 * time.Minute,
		Run: func(ctx context.Context, run *jobs.Run) error {
			res, err := svc.CompleteItems(ctx, 0)
			run.Set("completed", int64(res.Completed))
			run.Set("pending", int64(res.Pending))
			run.Set("failed", int64(res.Failed))
			run.Set("rechecked", int64(res.Rechecked))
			if err == nil && res.Failed > 0 {
				err = fmt.Errorf("%d items could not be completed; the next run retries them", res.Failed)
			}
			return err
		},
	}); err != nil {
		return err
	}
	_ = a
	return s.Register(jobs.Job{
		Name: "bank-webhook-update", Schedule: "41 * * * *", Timeout: time.Hour,
		Run: func(ctx context.Context, run *jobs.Run) error {
			res, err := svc.UpdateWebhooks(ctx, 0)
			run.Set("updated", int64(res.Updated))
			run.Set("failed", int64(res.Failed))
			if err == nil && res.Failed > 0 {
				err = fmt.Errorf("%d items could not be told the webhook URL; the next run retries them", res.Failed)
			}
			return err
		},
	})
}
