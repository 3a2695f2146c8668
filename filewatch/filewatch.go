// Package filewatch keeps a configuration file in force while kluis runs:
// it reads the file again every interval and on SIGHUP, and a version that
// does not load leaves the one in force as it is. The service policy and
// the apps file both work this way.
package filewatch

import (
	"context"
	"log/slog"
	"os"
	"time"
)

// Reloader reads its file again and puts it in force if it changed and
// loads; it reports whether it changed. An error leaves the version in
// force unchanged.
type Reloader func() (changed bool, err error)

// Watch calls reload every interval and whenever hup delivers (SIGHUP),
// until ctx ends. Each change put in force is logged, and so is a bad
// version (once per distinct error, so that a file left broken does not
// flood the log). what names the file in the log lines ("service policy",
// "apps file"); errors must not carry secrets.
func Watch(ctx context.Context, what string, interval time.Duration, hup <-chan os.Signal, logger *slog.Logger, reload Reloader) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastBad string
	for {
		why := "changed"
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-hup:
			why = "SIGHUP"
		}
		changed, err := reload()
		switch {
		case err != nil && err.Error() != lastBad:
			lastBad = err.Error()
			logger.Error(what+" not reloaded; the version in force stays", "trigger", why, "cause", lastBad)
		case err != nil:
		case changed:
			lastBad = ""
			logger.Info(what+" reloaded", "trigger", why)
		default:
			lastBad = "" // the file is back to the version in force
		}
	}
}
