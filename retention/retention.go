// Package retention is the shape of a retention class: one kind of record a
// feature keeps for a while and then purges. Each feature package exports
// the classes of its own tables (their SQL names only those tables);
// cmd/kluis gathers them (config.RetentionClasses) and compliance's Purger
// runs them, adding what every class shares: legal holds, and rows still
// referred to, are kept. The package depends on nothing, so that every
// feature, the vault included, can name the type.
package retention

import (
	"strings"
	"time"
)

// Day is a day, the unit retention periods are thought in.
const Day = 24 * time.Hour

// Class is one kind of record and how long it is kept. A class whose table
// or columns do not exist yet is skipped with a note, so a class may be
// registered before its migration lands.
type Class struct {
	// Name names the class ("link_sessions"); its setting is
	// KLUIS_RETENTION_<NAME in capitals> (Setting).
	Name string
	// Table is the public table the class's rows live in: one of the
	// registering feature's own.
	Table string
	// Where selects the rows whose period is over, on the table aliased t;
	// $1 is the cutoff (now minus the period). It names only the
	// feature's own tables.
	Where string
	// Subject, when the rows belong to a subject, is an expression on t
	// giving the internal subject id, so that held subjects' rows are kept
	// (and counted apart).
	Subject string
	// Requires lists the columns Where and Subject use, checked in the
	// catalog before the class runs.
	Requires []string
	// Default is the period kept when no setting says otherwise; Min is the
	// shortest a setting may ask for.
	Default, Min time.Duration
	// Description says in words what is purged, for documentation and
	// `kluis jobs` output.
	Description string
}

// Setting is the environment variable that sets the class's period.
func (c Class) Setting() string {
	return "KLUIS_RETENTION_" + strings.ToUpper(c.Name)
}
