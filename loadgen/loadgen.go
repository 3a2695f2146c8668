// Package loadgen sends a bounded load of HTTP requests to one endpoint and
// reports throughput and latency percentiles. kluis's benchmarks use it
// against in-test servers (and their floors); `go run ./cmd/loadgen` points
// it at a running kluis, such as the one `make dev` starts.
//
// The load is bounded in count and in time and stops by itself; it is meant
// for addresses on this machine only.
package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Config describes one load run.
type Config struct {
	Client *http.Client
	Method string
	URL    string
	// URLs, if set, are used in turn instead of URL (many records, say).
	URLs []string
	// URLFor, if set, names the i-th request's URL instead (a uniformly
	// random record among a million, say, without a million strings).
	URLFor  func(i int) string
	Header  http.Header
	Body    []byte
	Clients int           // concurrent callers
	Max     int           // total requests at most
	For     time.Duration // wall time at most
	// OK says which statuses count as successes (default: 2xx).
	OK func(status int) bool
}

// Result is what a run measured.
type Result struct {
	Requests  int
	Failures  int
	Statuses  map[int]int
	Elapsed   time.Duration
	PerSecond float64
	P50, P90  time.Duration
	P99, Max  time.Duration
}

// String formats a result on one line.
func (r Result) String() string {
	return fmt.Sprintf("%d requests (%d failed) in %s: %.0f/s, p50 %s, p90 %s, p99 %s, max %s",
		r.Requests, r.Failures, r.Elapsed.Round(time.Millisecond), r.PerSecond,
		r.P50.Round(time.Microsecond), r.P90.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond))
}

// Run sends the load and measures it. It stops at Max requests, after For,
// or when ctx ends, whichever comes first.
func Run(ctx context.Context, cfg Config) Result {
	cfg = withDefaults(cfg)
	ctx, cancel := context.WithTimeout(ctx, cfg.For)
	defer cancel()
	var (
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, min(cfg.Max, 1<<20))
		statuses  = map[int]int{}
		failures  int
		next      int
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next >= cfg.Max {
			return 0, false
		}
		next++
		return next - 1, true
	}
	start := time.Now()
	var wg sync.WaitGroup
	for c := 0; c < cfg.Clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i, ok := take()
				if !ok {
					return
				}
				status, took := once(ctx, cfg, i)
				mu.Lock()
				if ctx.Err() == nil || status != 0 {
					latencies = append(latencies, took)
					statuses[status]++
					if !cfg.OK(status) {
						failures++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return summarize(latencies, statuses, failures, time.Since(start))
}

func withDefaults(cfg Config) Config {
	if cfg.Client == nil {
		cfg.Client = http.DefaultClient
	}
	if cfg.Method == "" {
		cfg.Method = http.MethodGet
	}
	if cfg.Clients <= 0 {
		cfg.Clients = 1
	}
	if cfg.Max <= 0 {
		cfg.Max = 1000
	}
	if cfg.For <= 0 {
		cfg.For = time.Minute
	}
	if cfg.OK == nil {
		cfg.OK = func(s int) bool { return s >= 200 && s < 300 }
	}
	return cfg
}

func once(ctx context.Context, cfg Config, i int) (int, time.Duration) {
	url := cfg.URL
	switch {
	case cfg.URLFor != nil:
		url = cfg.URLFor(i)
	case len(cfg.URLs) > 0:
		url = cfg.URLs[i%len(cfg.URLs)]
	}
	var body io.Reader
	if cfg.Body != nil {
		body = bytes.NewReader(cfg.Body)
	}
	req, err := http.NewRequestWithContext(ctx, cfg.Method, url, body)
	if err != nil {
		return 0, 0
	}
	for k, vs := range cfg.Header {
		req.Header[k] = vs
	}
	start := time.Now()
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return 0, time.Since(start)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close() // drained; a close error changes nothing measured
	return resp.StatusCode, time.Since(start)
}

func summarize(lat []time.Duration, statuses map[int]int, failures int, elapsed time.Duration) Result {
	r := Result{Requests: len(lat), Failures: failures, Statuses: statuses, Elapsed: elapsed}
	if len(lat) == 0 {
		return r
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	r.P50, r.P90, r.P99, r.Max = pct(0.50), pct(0.90), pct(0.99), lat[len(lat)-1]
	r.PerSecond = float64(len(lat)) / elapsed.Seconds()
	return r
}
