package banklink

import (
	"time"

	"github.com/kluis-dev/kluis/retention"
)

// SessionRetentionClasses are the retention classes of banklink's rows that
// refer to items (link sessions, providers' webhooks): they are purged
// before the items (ItemRetentionClasses), so that an item they kept goes
// in the same run.
func SessionRetentionClasses() []retention.Class {
	return []retention.Class{
		{
			Name: "link_sessions", Table: "link_sessions", Subject: "t.subject_id",
			// A session whose unstored token was never confirmed revoked is
			// kept: it is the erasure's record that access may be live.
			Where: `((t.status IN ('expired', 'exited', 'exchanged') AND t.updated_at < $1)
				OR (t.status IN ('created', 'succeeded') AND t.expires_at < $1)) AND t.revoke_failed_at IS NULL`,
			Requires: []string{"status", "updated_at", "expires_at", "subject_id", "revoke_failed_at"},
			Default:  30 * retention.Day, Min: time.Hour,
			Description: "link sessions that ended (expired, exited or exchanged), or that were never finished and are past their deadline",
		},
		{
			Name: "provider_webhook_events", Table: "provider_webhook_events",
			Subject:  "(SELECT i.subject_id FROM items i WHERE i.id = t.item_id)",
			Where:    `t.received_at < $1`,
			Requires: []string{"received_at", "item_id"},
			Default:  90 * retention.Day, Min: retention.Day,
			Description: "verified provider webhooks, by the time they were received (duplicates are recognised for this long)",
		},
	}
}

// ItemRetentionClasses are the retention classes of accounts and items, in
// purge order: accounts before the items they belong to. Rows that still
// refer to one (a verification of an account, a session naming an item)
// keep it: compliance's Purger passes over rows any foreign key still
// points at, so these classes name banklink's tables only.
func ItemRetentionClasses() []retention.Class {
	return []retention.Class{
		{
			Name: "removed_accounts", Table: "accounts", Subject: "t.subject_id",
			Where: `t.removed_at < $1
				OR t.item_id IN (SELECT i.id FROM items i WHERE i.status = 'removed' AND i.removed_at < $1)`,
			Requires: []string{"removed_at", "item_id", "subject_id"},
			Default:  90 * retention.Day, Min: time.Hour,
			Description: "accounts that were removed, or whose item was removed, by the time of removal",
		},
		{
			Name: "removed_items", Table: "items", Subject: "t.subject_id",
			Where:    `t.status = 'removed' AND t.removed_at < $1`,
			Requires: []string{"status", "removed_at", "subject_id"},
			Default:  90 * retention.Day, Min: time.Hour,
			Description: "removed items (their credential is already destroyed), by the time of removal",
		},
		{
			// Verifications refer to accounts by foreign key, so an account
			// one still names is kept (compliance's blocking references).
			Name: "revoked_accounts", Table: "accounts", Subject: "t.subject_id",
			Where: `(t.status = 'revoked' AND t.revoked_at < $1)
				OR t.item_id IN (SELECT i.id FROM items i WHERE i.status = 'revoked' AND i.updated_at < $1)`,
			Requires: []string{"status", "revoked_at", "item_id", "subject_id"},
			Default:  90 * retention.Day, Min: time.Hour,
			Description: "accounts whose owner withdrew consent at the bank (or whose item was revoked), by the time of revocation, once no verification refers to them",
		},
		{
			Name: "revoked_items", Table: "items", Subject: "t.subject_id",
			Where: `t.status = 'revoked' AND t.updated_at < $1
				AND NOT EXISTS (SELECT 1 FROM accounts a WHERE a.item_id = t.id)
				AND NOT EXISTS (SELECT 1 FROM link_sessions l WHERE l.item_id = t.id OR l.exchanged_item_id = t.id)
				AND NOT EXISTS (SELECT 1 FROM provider_webhook_events w WHERE w.item_id = t.id)`,
			Requires: []string{"status", "updated_at", "subject_id"},
			Default:  90 * retention.Day, Min: time.Hour,
			Description: "items whose owner withdrew consent at the bank (their token is already destroyed), by the time of revocation (the item's last change), once nothing refers to them",
		},
	}
}
