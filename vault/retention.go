package vault

import (
	"time"

	"github.com/kluis-dev/kluis/retention"
)

// RetentionClasses are the vault's retention classes: the tombstones of
// revoked credentials. Subjects have no class of their own; a dormant
// subject is erased through compliance's erasure pipeline.
func RetentionClasses() []retention.Class {
	return []retention.Class{
		{
			// Items and accounts refer to credentials by foreign key, so a
			// tombstone one still names is kept (compliance's blocking
			// references): the class names the vault's table only.
			Name: "revoked_credentials", Table: "credentials", Subject: "t.subject_id",
			Where:    `t.revoked_at < $1`,
			Requires: []string{"revoked_at", "ref", "subject_id"},
			Default:  90 * retention.Day, Min: time.Hour,
			Description: "tombstones of revoked credentials (the secret is long destroyed; the ref answers 410 until then and 404 after), once no item or account refers to them",
		},
	}
}
