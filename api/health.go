package api

import (
	"context"
	"net/http"
	"sort"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
)

// healthz says the process is up; it checks nothing else.
func healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyCheckTimeout bounds each dependency check, so /readyz answers quickly
// even when a dependency hangs.
const readyCheckTimeout = 2 * time.Second

// readyz checks every dependency in d.Ready and answers 503 with Retry-After
// when any of them is not usable. The body names the dependencies and their
// state, never an error's text.
func (d *Deps) readyz(c echo.Context) error {
	names := make([]string, 0, len(d.Ready))
	for n := range d.Ready {
		names = append(names, n)
	}
	sort.Strings(names)
	checks := map[string]string{}
	ready := true
	for _, n := range names {
		ctx, cancel := context.WithTimeout(c.Request().Context(), readyCheckTimeout)
		err := d.Ready[n](ctx)
		cancel()
		if err != nil {
			ready = false
			checks[n] = "unavailable"
			d.Logger.WarnContext(c.Request().Context(), "not ready", "request_id", requestID(c), "dependency", n, "cause", err.Error())
			continue
		}
		checks[n] = "ok"
	}
	if !ready {
		return kluis.Errorf(kluis.EUnavailable, "not ready").With("checks", checks)
	}
	return c.JSON(http.StatusOK, map[string]any{"status": "ready", "checks": checks})
}
