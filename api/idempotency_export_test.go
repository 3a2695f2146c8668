package api

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
)

// Things is a test-only resource under /v1, served only to the Deps a test
// asks for (so the route list of every other test, and the spec test, stay
// as the server really is). Each create counts, takes a moment (so that
// concurrent requests overlap) and answers 201; a name of "fail-once" fails
// with 503 the first time.
type Things struct {
	Created  atomic.Int64
	failures sync.Map
}

// WithThings serves POST /v1/test/things on d's public listener.
func WithThings(d *Deps) *Things {
	things := &Things{}
	d.testRoutes = func(v1 *echo.Group) {
		v1.POST("/test/things", func(c echo.Context) error {
			var req struct {
				Name string `json:"name"`
			}
			if err := DecodeJSON(c, &req); err != nil {
				return err
			}
			if _, failed := things.failures.LoadOrStore(req.Name, true); !failed && req.Name == "fail-once" {
				return kluis.Unavailable("test dependency", nil)
			}
			time.Sleep(50 * time.Millisecond)
			n := things.Created.Add(1)
			c.Response().Header().Set(echo.HeaderLocation, "/v1/test/things/"+req.Name)
			return c.JSON(http.StatusCreated, map[string]any{"id": n, "name": req.Name, "owner": Subject(c)})
		})
	}
	return things
}
