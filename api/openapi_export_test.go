package api

import "maps"

// ErrorStatuses is the code→status table of the codes that appear as
// error.code, for the contract test; the others travel in error.reason.
func ErrorStatuses() map[string]int {
	out := maps.Clone(statusOf)
	for code, status := range out {
		if c, _ := bodyCode(code, status, nil); c != code {
			delete(out, code)
		}
	}
	return out
}

// ErrorReasons are the specific codes that travel in error.reason.
func ErrorReasons() map[string]int {
	out := map[string]int{}
	for code, status := range statusOf {
		if c, _ := bodyCode(code, status, nil); c != code {
			out[code] = status
		}
	}
	return out
}

// FreshMFARoute says whether method and route template (echo's, with :id)
// need a fresh staff MFA (freshMFARoutes).
func FreshMFARoute(method, path string) bool { return freshMFARoutes[method+" "+path] }
