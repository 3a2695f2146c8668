package events

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kluis-dev/kluis/apps"
)

// deliveryMetrics count deliveries per endpoint. The labels are the app id
// and the endpoint's configured id, never its URL (whose query or userinfo
// may carry a token).
type deliveryMetrics struct {
	attempts *prometheus.CounterVec
	duration *prometheus.HistogramVec
	dead     *prometheus.CounterVec
}

func newDeliveryMetrics() *deliveryMetrics {
	labels := []string{"app", "endpoint"}
	return &deliveryMetrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kluis_webhook_delivery_attempts_total",
			Help: "Event delivery attempts to app endpoints, by app, endpoint id and outcome (delivered or failed).",
		}, append(labels, "outcome")),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kluis_webhook_delivery_duration_seconds",
			Help:    "How long one event delivery attempt took, by app and endpoint id.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10},
		}, labels),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kluis_webhook_deliveries_dead_total",
			Help: "Event deliveries given up after the retry period, by app and endpoint id.",
		}, labels),
	}
}

func (m *deliveryMetrics) observe(ep apps.Endpoint, res attemptResult) {
	outcome := "failed"
	if res.ok() {
		outcome = "delivered"
	}
	m.attempts.WithLabelValues(ep.App, ep.ID, outcome).Inc()
	if res.duration > 0 {
		m.duration.WithLabelValues(ep.App, ep.ID).Observe(res.duration.Seconds())
	}
}

// Collector returns the worker's delivery metrics, for /metrics.
func (w *Worker) Collector() prometheus.Collector { return w.metrics }

// Describe implements prometheus.Collector.
func (m *deliveryMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.attempts.Describe(ch)
	m.duration.Describe(ch)
	m.dead.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *deliveryMetrics) Collect(ch chan<- prometheus.Metric) {
	m.attempts.Collect(ch)
	m.duration.Collect(ch)
	m.dead.Collect(ch)
}
