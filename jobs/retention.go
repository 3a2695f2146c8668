package jobs

import "github.com/kluis-dev/kluis/retention"

// RetentionClasses are the job runs' retention classes.
func RetentionClasses() []retention.Class {
	return []retention.Class{
		{
			Name: "job_runs", Table: "job_runs",
			Where:    `t.finished_at < $1`,
			Requires: []string{"finished_at"},
			Default:  90 * retention.Day, Min: retention.Day,
			Description: "records of scheduled job runs, by the time they finished (the audit chain keeps an entry per run)",
		},
	}
}
