package vault

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// RotationMetrics is the key-rotation job's progress for /metrics:
// kluis_key_rotation_* gauges of the last (or running) run, and the
// keyring's provider calls. It is safe for concurrent use.
type RotationMetrics struct {
	mu   sync.Mutex
	last RotationResult
	ring *KeyRing

	desc struct {
		remaining, rewrapped, migrated, failed, resealed, resealFailed, epoch, running, keyringCalls *prometheus.Desc
	}
}

// NewRotationMetrics returns the collector; ring, if not nil, adds its
// keyring provider calls.
func NewRotationMetrics(ring *KeyRing) *RotationMetrics {
	m := &RotationMetrics{ring: ring}
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	m.desc.remaining = d("kluis_key_rotation_subject_keys_remaining", "Subject keys not yet re-wrapped under the active keyring epoch, as the last rotation run last counted.")
	m.desc.rewrapped = d("kluis_key_rotation_subject_keys_rewrapped", "Subject keys the last rotation run re-wrapped under the active keyring epoch.")
	m.desc.migrated = d("kluis_key_rotation_subject_keys_migrated", "Subject keys wrapped by the root key that the last rotation run moved into the key hierarchy.")
	m.desc.failed = d("kluis_key_rotation_subject_keys_failed", "Subject keys the last rotation run could not re-wrap (keystore.rotation_failures).")
	m.desc.resealed = d("kluis_key_rotation_subjects_resealed", "Subjects the last rotation run gave a new key version.")
	m.desc.resealFailed = d("kluis_key_rotation_subjects_reseal_failed", "Subjects the last rotation run could not re-seal (keystore.rotation_failures).")
	m.desc.epoch = d("kluis_keyring_active_epoch", "The active keyring epoch, as the last rotation run saw it.")
	m.desc.running = d("kluis_key_rotation_running", "1 while a rotation run is in progress here.")
	m.desc.keyringCalls = d("kluis_keyring_provider_calls_total", "Key-provider calls made to load or confirm keyring keys.")
	return m
}

// Observe records a run's progress (RotationOptions.Report).
func (m *RotationMetrics) Observe(r RotationResult) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last = r
}

// Describe implements prometheus.Collector.
func (m *RotationMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.desc.remaining, m.desc.rewrapped, m.desc.migrated, m.desc.failed,
		m.desc.resealed, m.desc.resealFailed, m.desc.epoch, m.desc.running, m.desc.keyringCalls} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *RotationMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	r := m.last
	m.mu.Unlock()
	gauge := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	gauge(m.desc.remaining, r.Remaining)
	gauge(m.desc.rewrapped, r.Rewrapped)
	gauge(m.desc.migrated, r.Migrated)
	gauge(m.desc.failed, r.RewrapFailed)
	gauge(m.desc.resealed, r.ResealedSubjects)
	gauge(m.desc.resealFailed, r.ResealFailed)
	gauge(m.desc.epoch, int(r.Epoch))
	running := 0
	if r.Step != "" && r.Step != StepDone {
		running = 1
	}
	gauge(m.desc.running, running)
	if m.ring != nil {
		ch <- prometheus.MustNewConstMetric(m.desc.keyringCalls, prometheus.CounterValue, float64(m.ring.KeyringProviderCalls()))
	}
}
