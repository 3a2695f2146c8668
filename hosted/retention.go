package hosted

import (
	"time"

	"github.com/kluis-dev/kluis/retention"
)

// RetentionClasses are the hosted pages' retention classes.
func RetentionClasses() []retention.Class {
	return []retention.Class{
		{
			Name: "hosted_pages", Table: "hosted_pages", Subject: "t.subject_id",
			Where:    `t.expires_at < $1`,
			Requires: []string{"expires_at", "subject_id"},
			Default:  retention.Day, Min: time.Hour,
			Description: "openings of hosted link and verification pages, by the time their page token expired (they hold no secret; the page is useless by then)",
		},
	}
}
