package config

import (
	"slices"

	"github.com/kluis-dev/kluis/api/idempotency"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/events"
	"github.com/kluis-dev/kluis/hosted"
	"github.com/kluis-dev/kluis/jobs"
	"github.com/kluis-dev/kluis/retention"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
)

// RetentionClasses gathers every feature's retention classes, in the order
// they are purged: rows that refer to others before the rows they refer to
// (sessions and providers' webhooks before items, verifications before
// accounts, accounts and items before the credentials they name). Each
// feature writes its classes' SQL on its own tables; this list is the one
// place that names them all. The audit entries' class, compliance's own,
// is added last by compliance.NewRegistry.
func RetentionClasses() []retention.Class {
	return slices.Concat(
		hosted.RetentionClasses(),
		banklink.SessionRetentionClasses(),
		verification.RetentionClasses(),
		banklink.ItemRetentionClasses(),
		vault.RetentionClasses(),
		events.RetentionClasses(),
		idempotency.RetentionClasses(),
		jobs.RetentionClasses(),
	)
}

// RetentionRegistry is the registry of every retention class
// (RetentionClasses, then the audit entries'), for compliance's Purger.
func RetentionRegistry() (*compliance.Registry, error) {
	return compliance.NewRegistry(RetentionClasses()...)
}
