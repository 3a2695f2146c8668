package api

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
)

const ctxRequestID = "kluis.request_id"

// requestID returns the id given to this request by withRequestID.
func requestID(c echo.Context) string {
	if id, ok := c.Get(ctxRequestID).(string); ok {
		return id
	}
	return ""
}

var ridEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// withRequestID gives every request an id of kluis's own, in the response's
// X-Request-Id, every log line and every error body. A client-sent id is not
// trusted: it would let callers write into kluis's logs.
func withRequestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		var b [12]byte
		_, _ = rand.Read(b[:])
		id := "req_" + strings.ToLower(ridEncoding.EncodeToString(b[:]))
		c.Set(ctxRequestID, id)
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		return next(c)
	}
}

// secureHeaders sets the headers every kluis response carries: no sniffing,
// no caching (responses may hold credentials or personal data), no framing,
// no referrer. Go's server sends no Server header, and neither does kluis.
func secureHeaders(tls bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Response().Header()
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Cache-Control", "no-store")
			h.Set("Pragma", "no-cache")
			h.Set("X-Frame-Options", "DENY")
			h.Set("Referrer-Policy", "no-referrer")
			h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
			if tls {
				h.Set("Strict-Transport-Security", "max-age=63072000")
			}
			return next(c)
		}
	}
}

// limitBody refuses bodies over MaxBodyBytes with 413: at once when the
// declared length is too large, and while reading when a chunked body grows
// past it.
func limitBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.ContentLength > MaxBodyBytes {
			return kluis.Errorf(kluis.ETooLarge, "request body is larger than 1 MiB")
		}
		r.Body = http.MaxBytesReader(c.Response(), r.Body, MaxBodyBytes)
		return next(c)
	}
}

// requireJSON answers 415 to a request that carries a body that is not
// declared as JSON. Bodiless requests (GET, DELETE, an approve with no body)
// need no Content-Type.
func requireJSON(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if isPageRoute(c.Path()) {
			return next(c) // hosted pages' forms (docs/HOSTED.md)
		}
		hasBody := r.ContentLength > 0 || (r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody) || len(r.TransferEncoding) > 0
		if hasBody && !isJSON(r.Header.Get(echo.HeaderContentType)) {
			return kluis.Errorf(kluis.EUnsupportedMedia, "request body must be application/json")
		}
		return next(c)
	}
}

// withDeadline bounds every request, so that a stuck dependency answers 503
// within the deadline instead of holding the caller.
func withDeadline(d time.Duration) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			ctx, cancel := context.WithTimeout(c.Request().Context(), d)
			defer cancel()
			c.SetRequest(c.Request().WithContext(ctx))
			return deadlineError(ctx, next(c))
		}
	}
}

// deadlineError is withDeadline's rule: an internal error after the
// request's deadline passed is a dependency that did not answer in time.
func deadlineError(ctx context.Context, err error) error {
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && kluis.ErrorCode(err) == kluis.EInternal {
		return kluis.Unavailable("a dependency", err)
	}
	return err
}

// recoverPanics turns a panic into a 500 with nothing of the panic in the
// body; the stack goes to the log only.
func recoverPanics(logger *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) (err error) {
			defer func() {
				if p := recover(); p != nil {
					if p == http.ErrAbortHandler {
						panic(p)
					}
					logger.ErrorContext(c.Request().Context(), "panic in handler",
						"request_id", requestID(c), "route", c.Path(), "panic", fmt.Sprint(p))
					err = kluis.Errorf(kluis.EInternal, "internal error")
				}
			}()
			return next(c)
		}
	}
}

// accessLog writes one line per request: no query strings, no bodies, no
// headers, and the route template rather than the raw path.
func accessLog(logger *slog.Logger, listener string, m *httpMetrics) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err)
			}
			status := c.Response().Status
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			elapsed := time.Since(start)
			if m != nil {
				m.observe(listener, c.Request().Method, route, status, elapsed)
			}
			attrs := []any{
				"request_id", requestID(c), "listener", listener, "method", c.Request().Method,
				"route", route, "status", status, "duration_ms", strconv.FormatFloat(elapsed.Seconds()*1000, 'f', 2, 64),
			}
			if svc := serviceName(c); svc != "" {
				attrs = append(attrs, "service", svc)
			}
			logger.InfoContext(c.Request().Context(), "request", attrs...)
			return nil
		}
	}
}
