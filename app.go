package kluis

import (
	"regexp"
	"strings"
)

// DefaultApp is the app of today's single-app settings (KLUIS_JWT_*,
// KLUIS_PLAID_*, KLUIS_WEBHOOK_*), and the app every subject created before
// apps existed belongs to (migration 00022).
const DefaultApp = "default"

// appIDPattern is what an app id may be: it is a label in metrics, a part
// of stored endpoint ids and the value of `?app=`, so it is short and plain.
var appIDPattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// ValidAppID reports whether id may name an app.
func ValidAppID(id string) bool { return appIDPattern.MatchString(id) }

// userKeySep separates the app from the subject in a user key. A token's
// sub is printable ASCII without spaces (jwtauth), so a control character
// can never be part of one and the split is unambiguous.
const userKeySep = "\x1f"

// UserKey names a user within an app: the string that flows from the
// token to the features wherever "the user" used to be the token's sub
// alone (audit pseudonyms, rate limits, subject lookups). A user of the
// default app keeps the bare sub, so that audit entries and pseudonyms
// written before apps existed still name the same person; a user of any
// other app is "<app>\x1f<sub>", a different key for the same sub.
func UserKey(app, sub string) string {
	if app == DefaultApp || app == "" {
		return sub
	}
	return app + userKeySep + sub
}

// SplitUserKey is the inverse of UserKey: the app and the token's sub.
func SplitUserKey(key string) (app, sub string) {
	if a, s, ok := strings.Cut(key, userKeySep); ok {
		return a, s
	}
	return DefaultApp, key
}
