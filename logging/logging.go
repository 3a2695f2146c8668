// Package logging builds kluis's logger: log/slog writing JSON, behind a
// handler that masks secrets and personal data before anything is encoded.
//
// Masking works two ways. By key: an attribute whose key names a secret
// (password, access_token, account_number, …) has its value replaced whatever
// it holds. By value: every string that reaches the output, the message
// included, is scrubbed of digit runs that could be account, card, ID or phone
// numbers, of bearer tokens, and of JWT-shaped strings. The rules are
// deliberately conservative: a masked request field is a nuisance, a leaked
// account number is an incident.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// New returns a logger that writes one JSON object per line to w, drops
// records below level, and masks secrets in everything it writes.
func New(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(NewHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level:       level,
		ReplaceAttr: readableTimes,
	})))
}

// readableTimes writes the record's time in UTC to the millisecond and
// durations as "250ms" rather than slog's count of nanoseconds: easier to
// read, and no long digit run that a log scanner downstream might take for
// an account number.
func readableTimes(groups []string, a slog.Attr) slog.Attr {
	switch {
	case len(groups) == 0 && a.Key == slog.TimeKey && a.Value.Kind() == slog.KindTime:
		a.Value = slog.StringValue(a.Value.Time().UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	case a.Value.Kind() == slog.KindDuration:
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// ParseLevel parses KLUIS_LOG_LEVEL: debug, info, warn (or warning) or error,
// in any case. An empty string is info.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	// The value is a configuration word, not a secret, but keep it short in
	// case someone pasted something else into the variable.
	if len(s) > 16 {
		s = s[:16] + "…"
	}
	return 0, fmt.Errorf("logging: KLUIS_LOG_LEVEL %q is not one of debug, info, warn, error", Scrub(s))
}
