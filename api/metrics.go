package api

import (
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kluis-dev/kluis/vault/reveal"
)

// httpMetrics counts requests by listener, method, route template and
// status. Labels never hold ids, subjects or anything a caller chose.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// revealIntegrity counts reveals refused because a pointer and its
	// credential disagreed or a record did not authenticate, by route
	// ("credential", "account", "item"): anything above zero is an attack
	// or a corruption to investigate.
	revealIntegrity *prometheus.CounterVec
}

func newHTTPMetrics(reg *prometheus.Registry) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kluis_http_requests_total", Help: "HTTP requests by listener, method, route and status.",
		}, []string{"listener", "method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kluis_http_request_duration_seconds", Help: "HTTP request latency by listener and route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"listener", "route"}),
	}
	m.revealIntegrity = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kluis_reveal_integrity_failures_total",
		Help: "Reveals refused because a pointer and its credential disagreed or a sealed record did not authenticate, by route.",
	}, []string{"route"})
	reg.MustRegister(m.requests, m.duration, m.revealIntegrity)
	for _, route := range []string{reveal.ViaCredential, reveal.ViaAccount, reveal.ViaItem} {
		m.revealIntegrity.WithLabelValues(route) // shown as 0 until the first failure
	}
	// Registering the runtime collectors twice (two listeners, one registry)
	// is refused; ignore that.
	_ = reg.Register(collectors.NewGoCollector())
	_ = reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// knownMethods keeps the method label bounded: anything else is "other".
var knownMethods = map[string]bool{"GET": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "HEAD": true, "OPTIONS": true}

func (m *httpMetrics) observe(listener, method, route string, status int, elapsed time.Duration) {
	if !knownMethods[method] {
		method = "other"
	}
	m.requests.WithLabelValues(listener, method, route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(listener, route).Observe(elapsed.Seconds())
}

func (d *Deps) metricsHandler() echo.HandlerFunc {
	h := promhttp.HandlerFor(d.Registry, promhttp.HandlerOpts{})
	return echo.WrapHandler(h)
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
