package verification

import "github.com/kluis-dev/kluis/retention"

// FailuresRetentionClass is the retention class of failed verifications'
// records, which must outlive KLUIS_VERIFICATION_LOCKOUT (config checks).
const FailuresRetentionClass = "verification_failures"

// RetentionClasses are verification's retention classes. Verifications
// refer to banklink's accounts, so they are purged before those.
func RetentionClasses() []retention.Class {
	return []retention.Class{
		{
			Name: "verifications", Table: "verifications", Subject: "t.subject_id",
			Where:    `t.status IN ('verified', 'failed', 'expired', 'returned') AND coalesce(t.finished_at, t.updated_at) < $1`,
			Requires: []string{"status", "finished_at", "updated_at", "subject_id"},
			Default:  180 * retention.Day, Min: retention.Day,
			Description: "finished verifications (verified, failed, expired or returned), by the time they finished",
		},
		{
			Name: FailuresRetentionClass, Table: "verification_failures", Subject: "t.subject_id",
			Where:    `t.failed_at < $1`,
			Requires: []string{"failed_at", "subject_id"},
			Default:  90 * retention.Day, Min: retention.Day,
			Description: "records of failed verifications, by the time they failed (they lock accounts and numbers for KLUIS_VERIFICATION_LOCKOUT, which this must not be shorter than)",
		},
	}
}
