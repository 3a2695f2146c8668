package api_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/api/ratelimit"
)

// withLimits runs the listeners with the given limits.
func withLimits(l api.RateLimits) apitest.Option {
	return func(d *api.Deps) { d.RateLimits = &l }
}

func perMinute(n int) ratelimit.Limit {
	return ratelimit.Limit{Rate: n, Period: time.Minute, Burst: n}
}

// limitGet sends a GET with an optional X-Forwarded-For and returns the status
// and headers.
func limitGet(t *testing.T, c *http.Client, url, token, xff string) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// mustBeLimited checks a 429 with a Retry-After of whole seconds.
func mustBeLimited(t *testing.T, status int, h http.Header) {
	t.Helper()
	if status != http.StatusTooManyRequests {
		t.Fatalf("status = %d, want 429", status)
	}
	if n, err := strconv.Atoi(h.Get("Retry-After")); err != nil || n < 1 {
		t.Fatalf("Retry-After = %q, want whole seconds >= 1", h.Get("Retry-After"))
	}
}

func TestABurstBeyondTheAddressLimitGets429WithRetryAfter(t *testing.T) {
	env := apitest.Start(t, withLimits(api.RateLimits{Address: perMinute(5)}))
	for i := 0; i < 5; i++ {
		if status, _ := limitGet(t, nil, env.Public.URL+"/healthz", "", ""); status != 200 {
			t.Fatalf("request %d = %d, want 200 within the limit", i, status)
		}
	}
	status, h, body := apitest.Do(t, nil, "GET", env.Public.URL+"/healthz", "", "", "")
	mustError(t, status, body, 429, "rate_limited")
	mustBeLimited(t, status, h)
}

func TestANewForwardedForFromAnUntrustedPeerDoesNotResetTheLimit(t *testing.T) {
	env := apitest.Start(t, withLimits(api.RateLimits{Address: perMinute(5)}))
	var status int
	var h http.Header
	for i := 0; i < 6; i++ {
		status, h = limitGet(t, nil, env.Public.URL+"/healthz", "", fmt.Sprintf("203.0.113.%d", i+1))
	}
	mustBeLimited(t, status, h)
}

func TestBehindATrustedProxyTheForwardedAddressIsTheClient(t *testing.T) {
	env := apitest.Start(t, withLimits(api.RateLimits{Address: perMinute(3)}), func(d *api.Deps) {
		d.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	for i := 0; i < 10; i++ {
		if status, _ := limitGet(t, nil, env.Public.URL+"/healthz", "", fmt.Sprintf("203.0.113.%d", i+1)); status != 200 {
			t.Fatalf("client %d = %d, want 200: each forwarded client has its own limit", i, status)
		}
	}
	var status int
	var h http.Header
	for i := 0; i < 4; i++ {
		status, h = limitGet(t, nil, env.Public.URL+"/healthz", "", "198.51.100.7")
	}
	mustBeLimited(t, status, h)
}

// TestIPv6ClientsAreCountedByPrefix is the evasion of issue 11 item 5: a
// client holding a /64 sends each request from a new address in it. It
// shares one count; another /64 has its own; an IPv4-mapped IPv6 address is
// the IPv4 address; the prefix length is configurable.
func TestIPv6ClientsAreCountedByPrefix(t *testing.T) {
	behindProxy := func(d *api.Deps) {
		d.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}
	get := func(t *testing.T, env *apitest.Env, xff string) (int, http.Header) {
		t.Helper()
		return limitGet(t, nil, env.Public.URL+"/healthz", "", xff)
	}
	t.Run("addresses in one /64 share a count", func(t *testing.T) {
		env := apitest.Start(t, withLimits(api.RateLimits{Address: perMinute(3)}), behindProxy)
		for i := 1; i <= 3; i++ {
			if status, _ := get(t, env, fmt.Sprintf("2001:db8:1:2::%x", i)); status != 200 {
				t.Fatalf("request %d = %d, want 200", i, status)
			}
		}
		status, h := get(t, env, "2001:db8:1:2:ffff:ffff:ffff:fffe")
		mustBeLimited(t, status, h)
		if status, _ := get(t, env, "2001:db8:1:3::1"); status != 200 {
			t.Fatalf("another /64 = %d, want 200: it has its own count", status)
		}
	})
	t.Run("an IPv4-mapped address is the IPv4 address", func(t *testing.T) {
		env := apitest.Start(t, withLimits(api.RateLimits{Address: perMinute(3)}), behindProxy)
		for _, xff := range []string{"198.51.100.9", "::ffff:198.51.100.9", "198.51.100.9"} {
			if status, _ := get(t, env, xff); status != 200 {
				t.Fatalf("%s = %d, want 200", xff, status)
			}
		}
		status, h := get(t, env, "::ffff:c633:6409")
		mustBeLimited(t, status, h)
	})
	t.Run("the prefix length is configurable", func(t *testing.T) {
		env := apitest.Start(t, withLimits(api.RateLimits{Address: perMinute(2), IPv6Prefix: 48}), behindProxy)
		for _, xff := range []string{"2001:db8:7:1::1", "2001:db8:7:2::1"} {
			if status, _ := get(t, env, xff); status != 200 {
				t.Fatalf("%s = %d, want 200", xff, status)
			}
		}
		status, h := get(t, env, "2001:db8:7:ffff::1")
		mustBeLimited(t, status, h)
	})
}

func TestTheSubjectLimitCountsPerUser(t *testing.T) {
	env := apitest.Start(t, withLimits(api.RateLimits{Subject: perMinute(3)}))
	alice, bob := jwttest.Token(t, jwttest.WithSubject("usr_alice")), jwttest.Token(t, jwttest.WithSubject("usr_bob"))
	var status int
	var h http.Header
	for i := 0; i < 4; i++ {
		status, h = limitGet(t, nil, env.Public.URL+"/v1/nothing-here", alice, "")
	}
	mustBeLimited(t, status, h)
	if status, _ := limitGet(t, nil, env.Public.URL+"/v1/nothing-here", bob, ""); status != 404 {
		t.Fatalf("bob = %d, want 404: alice's count is not bob's", status)
	}
}

func TestRevealIsLimitedPerService(t *testing.T) {
	env := apitest.Start(t, withLimits(api.RateLimits{Operations: map[string]ratelimit.Limit{api.OpReveal: perMinute(2)}}))
	payments, reporting := env.ServiceClient(t, "payments"), env.ServiceClient(t, "reporting")
	url := env.Internal.URL + "/internal/v1/credentials/cred_unknown/reveal"
	var status int
	var h http.Header
	var body string
	for i := 0; i < 3; i++ {
		status, h, body = apitest.Do(t, payments, "POST", url, "", "application/json", `{"purpose":"payment_initiation"}`)
	}
	mustError(t, status, body, 429, "rate_limited")
	mustBeLimited(t, status, h)
	status, _, _ = apitest.Do(t, reporting, "POST", url, "", "application/json", `{"purpose":"statement"}`)
	if status == 429 {
		t.Fatal("reporting was limited by payments' reveals")
	}
}

func TestTwoInstancesSharingRedisEnforceOneLimit(t *testing.T) {
	prefix := "kluis-test:" + randomPrefix(t) + ":"
	shared := func(d *api.Deps) { d.RateLimiter = redisLimiter(t, prefix) }
	limits := withLimits(api.RateLimits{Address: perMinute(6)})
	one := apitest.Start(t, limits, shared)
	// The instances share system keys in production; here the second
	// borrows the first's, so both name a client by the same pseudonym.
	two := apitest.Start(t, limits, shared, func(d *api.Deps) { d.Pseudonyms = one.System })
	allowed := 0
	var status int
	var h http.Header
	for i := 0; i < 10; i++ {
		url := one.Public.URL
		if i%2 == 1 {
			url = two.Public.URL
		}
		if status, h = limitGet(t, nil, url+"/healthz", "", ""); status == 200 {
			allowed++
		}
	}
	if allowed != 6 {
		t.Fatalf("allowed = %d across both instances, want 6", allowed)
	}
	mustBeLimited(t, status, h)
}

func redisLimiter(t *testing.T, prefix string) ratelimit.Limiter {
	t.Helper()
	rdb, err := ratelimit.NewRedisClient("redis://127.0.0.1:6379/0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no Redis at 127.0.0.1:6379 (CI is set, so this fails): %v", err)
		}
		t.Skipf("no Redis at 127.0.0.1:6379: %v", err)
	}
	return ratelimit.NewRedis(rdb, prefix)
}

func randomPrefix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
