package kluis

import "time"

// Clock tells the time. Production uses SystemClock; tests inject their own so
// that deadlines and retention can be tested without sleeping.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock, in UTC.
type SystemClock struct{}

// Now returns the current time in UTC.
func (SystemClock) Now() time.Time { return time.Now().UTC() }
