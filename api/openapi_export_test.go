package api

import "maps"

// ErrorStatuses is the code→status table, for the contract test.
func ErrorStatuses() map[string]int { return maps.Clone(statusOf) }
