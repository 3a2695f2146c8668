package idempotency

import (
	"time"

	"github.com/kluis-dev/kluis/retention"
)

// RetentionClasses are the idempotency keys' retention classes.
func RetentionClasses() []retention.Class {
	return []retention.Class{
		{
			Name: "idempotency_keys", Table: "idempotency_keys",
			Where:    `t.expires_at < $1`,
			Requires: []string{"expires_at"},
			Default:  retention.Day, Min: time.Hour,
			Description: "idempotency keys, this long after they expired (they are kept at least KLUIS_IDEMPOTENCY_TTL)",
		},
	}
}
