// Package breaker is kluis's one circuit breaker: a dependency that keeps
// failing is left alone for a while, and callers get their "unavailable"
// at once instead of each waiting out the dependency's timeout. What counts
// as failure is the caller's to say (a refusal is an answer, not a
// failure); a caller that gave up (context.Canceled) says nothing about the
// dependency and is not counted. The adapters live beside the interfaces
// they guard: vault.GuardKeyProvider and banklink.GuardProvider.
package breaker

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// ErrOpen is what a call refused by an open (or half-open and busy) breaker
// returns, wrapped in Config.Unavailable's error.
var ErrOpen = errors.New("circuit breaker open after repeated failures")

// Options tune a breaker; zero values take the Config's defaults.
type Options struct {
	// Failures in a row that open the breaker (5).
	Failures uint32
	// OpenFor is how long it stays open before one trial call
	// (Config.DefaultOpenFor, else 10 s).
	OpenFor time.Duration
}

// Config says what a breaker guards and how it reports.
type Config struct {
	// Name names the breaker (gobreaker's name).
	Name string
	// Failure reports whether err is the dependency's failure; other
	// errors are answers and leave the breaker closed.
	Failure func(err error) bool
	// Unavailable wraps ErrOpen in the caller's own unavailability error,
	// so that an open breaker reads as the dependency being down.
	Unavailable func(open error) error
	// Metric, Help and Labels name the state gauge (0 closed, 1
	// half-open, 2 open) that Collector returns.
	Metric, Help string
	Labels       prometheus.Labels
	// DefaultOpenFor is OpenFor when Options leaves it zero.
	DefaultOpenFor time.Duration
}

// Breaker is one circuit breaker. It is safe for concurrent use.
type Breaker struct {
	cfg Config
	cb  *gobreaker.CircuitBreaker[any]
}

// New returns a closed breaker.
func New(cfg Config, o Options) *Breaker {
	if o.Failures == 0 {
		o.Failures = 5
	}
	if o.OpenFor == 0 {
		o.OpenFor = cfg.DefaultOpenFor
	}
	if o.OpenFor == 0 {
		o.OpenFor = 10 * time.Second
	}
	if cfg.Unavailable == nil {
		cfg.Unavailable = func(open error) error { return open }
	}
	failures := o.Failures
	b := &Breaker{cfg: cfg}
	b.cb = gobreaker.NewCircuitBreaker[any](gobreaker.Settings{
		Name:         cfg.Name,
		MaxRequests:  1,
		Timeout:      o.OpenFor,
		ReadyToTrip:  func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsSuccessful: func(err error) bool { return err == nil || !cfg.Failure(err) },
		IsExcluded:   func(err error) bool { return errors.Is(err, context.Canceled) },
	})
	return b
}

// State is the breaker's state: 0 closed, 1 half-open, 2 open.
func (b *Breaker) State() int { return int(b.cb.State()) }

// Collector is the breaker's state gauge, for the registry /metrics serves.
func (b *Breaker) Collector() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        b.cfg.Metric,
		Help:        b.cfg.Help,
		ConstLabels: b.cfg.Labels,
	}, func() float64 { return float64(b.State()) })
}

// Do runs call through b. An open breaker does not call and returns
// Config.Unavailable(ErrOpen).
func Do[T any](b *Breaker, call func() (T, error)) (T, error) {
	v, err := b.cb.Execute(func() (any, error) { return call() })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		var zero T
		return zero, b.cfg.Unavailable(ErrOpen)
	}
	t, _ := v.(T)
	return t, err
}

// Run is Do for a call that returns only an error.
func Run(b *Breaker, call func() error) error {
	_, err := Do(b, func() (struct{}, error) { return struct{}{}, call() })
	return err
}
