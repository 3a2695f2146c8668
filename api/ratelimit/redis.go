package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// redisCallTimeout bounds one limit check in Redis: a slow Redis must not
// make every request slow; past it, the fallback answers.
const redisCallTimeout = 150 * time.Millisecond

// Redis is a Limiter shared by every instance that uses the same Redis and
// prefix: GCRA in one Lua script per event (redis_rate), so instances agree
// on one count without coordinating.
type Redis struct {
	limiter *redis_rate.Limiter
	prefix  string
}

// NewRedisClient opens a client for a redis:// or rediss:// URL with short
// timeouts: a limit check that cannot be answered quickly falls back rather
// than holding the request.
func NewRedisClient(url string) (*redis.Client, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		// The URL may hold a password: do not echo it.
		return nil, fmt.Errorf("ratelimit: KLUIS_REDIS_URL does not parse as a Redis URL")
	}
	opts.DialTimeout = 500 * time.Millisecond
	opts.ReadTimeout = redisCallTimeout
	opts.WriteTimeout = redisCallTimeout
	opts.MaxRetries = 0
	return redis.NewClient(opts), nil
}

// NewRedis returns a Limiter over rdb. prefix separates this deployment's
// keys (and each test's) from any other user of the same Redis.
func NewRedis(rdb redis.UniversalClient, prefix string) *Redis {
	return &Redis{limiter: redis_rate.NewLimiter(rdb), prefix: prefix}
}

// Allow implements Limiter. Its error means Redis did not answer in time.
func (r *Redis) Allow(ctx context.Context, key string, limit Limit) (Result, error) {
	if limit.IsZero() {
		return Result{Allowed: true}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, redisCallTimeout)
	defer cancel()
	res, err := r.limiter.Allow(ctx, r.prefix+key, redis_rate.Limit{Rate: limit.Rate, Period: limit.Period, Burst: max(limit.Burst, 1)})
	if err != nil {
		return Result{}, fmt.Errorf("ratelimit: redis: %w", err)
	}
	out := Result{Remaining: max(res.Remaining, 0), Reset: max(res.ResetAfter, 0)}
	if res.Allowed > 0 {
		out.Allowed = true
		return out, nil
	}
	out.RetryAfter = max(res.RetryAfter, time.Millisecond)
	return out, nil
}

// Fallback limits through Primary (Redis) and, when Primary fails, through
// Secondary (Memory) instead: a Redis outage then leaves each instance
// enforcing the limit on its own (the limit across N instances becomes at
// most N times the configured one) rather than taking kluis down or
// letting traffic through unlimited. After a failure Primary is skipped for
// a short while, so that a dead Redis does not add its timeout to every
// request.
type Fallback struct {
	Primary, Secondary Limiter
	Logger             *slog.Logger
	// Skip is how long Primary is left alone after it fails (5 s if zero).
	Skip time.Duration

	mu         sync.Mutex
	downUntil  time.Time
	lastLogged time.Time
	fallbacks  prometheus.Counter
}

// NewFallback returns a Fallback and registers its counter
// (kluis_ratelimit_fallback_total) on reg, if reg is not nil.
func NewFallback(primary, secondary Limiter, logger *slog.Logger, reg prometheus.Registerer) *Fallback {
	f := &Fallback{Primary: primary, Secondary: secondary, Logger: logger,
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kluis_ratelimit_fallback_total",
			Help: "Rate-limit checks answered by the in-memory limiter because the shared store (Redis) failed.",
		})}
	if reg != nil {
		reg.MustRegister(f.fallbacks)
	}
	return f
}

// Allow implements Limiter. It never returns an error when Secondary does
// not.
func (f *Fallback) Allow(ctx context.Context, key string, limit Limit) (Result, error) {
	if !f.primaryDown() {
		res, err := f.Primary.Allow(ctx, key, limit)
		if err == nil {
			return res, nil
		}
		f.markDown(ctx, err)
	}
	if f.fallbacks != nil {
		f.fallbacks.Inc()
	}
	return f.Secondary.Allow(ctx, key, limit)
}

func (f *Fallback) primaryDown() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Now().Before(f.downUntil)
}

// markDown skips Primary for a while and logs at most once a minute.
func (f *Fallback) markDown(ctx context.Context, err error) {
	skip := f.Skip
	if skip == 0 {
		skip = 5 * time.Second
	}
	f.mu.Lock()
	now := time.Now()
	f.downUntil = now.Add(skip)
	logNow := now.Sub(f.lastLogged) >= time.Minute
	if logNow {
		f.lastLogged = now
	}
	f.mu.Unlock()
	if logNow && f.Logger != nil {
		f.Logger.WarnContext(ctx, "shared rate-limit store failed; limiting per instance in memory", "cause", err.Error())
	}
}
