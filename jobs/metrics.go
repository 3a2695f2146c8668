package jobs

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// OutcomeSkipped is the metrics' outcome of a scheduled tick that did not
// run: the job was already running (on this or another instance) or the
// scheduler was stopping. It is never recorded in job_runs.
const OutcomeSkipped = "skipped"

// Metrics are the Prometheus collectors of job runs (docs/OPERATIONS.md
// names the alerts to set on them). Labels are job names and count names,
// both fixed by the code, so the series are bounded.
type Metrics struct {
	runs        *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	lastSuccess *prometheus.GaugeVec
	lastRun     *prometheus.GaugeVec
	counts      *prometheus.GaugeVec

	mu sync.Mutex
	// shown remembers each job's count names of its last run, so that a
	// count the next run does not set drops to 0 instead of lingering.
	shown map[string][]string
}

// NewMetrics makes the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kluis_job_runs_total",
			Help: "Job runs by job and outcome (succeeded, failed, or skipped: a scheduled tick that found the job already running or the scheduler stopping).",
		}, []string{"job", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kluis_job_run_duration_seconds",
			Help:    "How long job runs took, by job.",
			Buckets: []float64{0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600},
		}, []string{"job"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kluis_job_last_success_timestamp_seconds",
			Help: "When the job's last successful run finished (Unix time), by job.",
		}, []string{"job"}),
		lastRun: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kluis_job_last_run_timestamp_seconds",
			Help: "When the job's last run finished, whatever its outcome (Unix time), by job.",
		}, []string{"job"}),
		counts: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kluis_job_last_run_count",
			Help: "The counts of the job's last run (rows purged per retention class, keys rewrapped, erasures completed, ...), by job and count name.",
		}, []string{"job", "count"}),
		shown: map[string][]string{},
	}
	reg.MustRegister(m.runs, m.duration, m.lastSuccess, m.lastRun, m.counts)
	return m
}

// observe records one run's result, or its skipping.
func (m *Metrics) observe(res RunResult, err error) {
	if m == nil {
		return
	}
	if errors.Is(err, ErrAlreadyRunning) || errors.Is(err, ErrStopped) {
		m.runs.WithLabelValues(res.Job, OutcomeSkipped).Inc()
		return
	}
	if res.ID == 0 || res.FinishedAt.IsZero() {
		// Not even recorded (the database down): a failure all the same.
		m.runs.WithLabelValues(res.Job, OutcomeFailed).Inc()
		return
	}
	m.runs.WithLabelValues(res.Job, res.Outcome).Inc()
	m.duration.WithLabelValues(res.Job).Observe(res.FinishedAt.Sub(res.StartedAt).Seconds())
	m.lastRun.WithLabelValues(res.Job).Set(float64(res.FinishedAt.Unix()))
	if res.Outcome == OutcomeSucceeded {
		m.lastSuccess.WithLabelValues(res.Job).Set(float64(res.FinishedAt.Unix()))
	}
	m.setCounts(res.Job, res.Counts)
}

func (m *Metrics) setCounts(job string, counts map[string]int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, name := range m.shown[job] {
		if _, ok := counts[name]; !ok {
			m.counts.WithLabelValues(job, name).Set(0)
		}
	}
	names := make([]string, 0, len(counts))
	for name, n := range counts {
		m.counts.WithLabelValues(job, name).Set(float64(n))
		names = append(names, name)
	}
	m.shown[job] = append(m.shown[job][:0], names...)
}
