package events

import "github.com/kluis-dev/kluis/retention"

// RetentionClasses are the outbox's retention classes.
func RetentionClasses() []retention.Class {
	return []retention.Class{
		{
			Name: "outbox_events", Table: "outbox",
			Where: `t.fanned_out AND t.created_at < $1
				AND NOT EXISTS (SELECT 1 FROM outbox_targets o WHERE o.event_id = t.id AND o.status = 'pending')`,
			Requires: []string{"fanned_out", "created_at", "id"},
			Default:  30 * retention.Day, Min: retention.Day,
			Description: "events for client apps whose every delivery is over (delivered or given up), with their delivery records",
		},
	}
}
