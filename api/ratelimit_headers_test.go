package api_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/dunglas/httpsfv"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/ratelimit"
)

// limitMember is one policy of a RateLimit-Policy or RateLimit header.
type limitMember map[string]int64

// parseLimitHeader parses one of the rate-limit header fields as the
// draft's Structured Field List of quoted policy names with integer
// parameters, failing on anything else.
func parseLimitHeader(t *testing.T, h http.Header, name string) map[string]limitMember {
	t.Helper()
	list, err := httpsfv.UnmarshalList(h.Values(name))
	if err != nil || len(list) == 0 {
		t.Fatalf("%s: %q is not a non-empty structured-field List: %v", name, h.Values(name), err)
	}
	out := map[string]limitMember{}
	for _, m := range list {
		it, ok := m.(httpsfv.Item)
		if !ok {
			t.Fatalf("%s: member %v is not an Item", name, m)
		}
		policy, ok := it.Value.(string)
		if !ok {
			t.Fatalf("%s: member %v is not a quoted policy name (sf-string)", name, it.Value)
		}
		params := limitMember{}
		for _, k := range it.Params.Names() {
			v, _ := it.Params.Get(k)
			n, ok := v.(int64)
			if !ok {
				t.Fatalf("%s: %s;%s=%v is not an integer", name, policy, k, v)
			}
			params[k] = n
		}
		out[policy] = params
	}
	return out
}

func TestEveryLimitedAnswerCarriesTheRateLimitHeaders(t *testing.T) {
	t.Parallel()
	limits := api.RateLimits{
		Address: perMinute(100),
		Subject: ratelimit.Limit{Rate: 3, Period: time.Hour, Burst: 3},
		Service: perMinute(50),
	}
	env := startBank(t, false, withLimits(limits))
	tok := userToken(t, "user-ratelimit-headers")
	for i := 1; i <= 3; i++ {
		status, h := limitGet(t, nil, env.Public.URL+"/v1/items", tok, "")
		if status != http.StatusOK {
			t.Fatalf("request %d = %d", i, status)
		}
		policy := parseLimitHeader(t, h, "RateLimit-Policy")
		if got := policy["address"]; got["q"] != 100 || got["w"] != 60 {
			t.Errorf("address policy = %v, want q=100;w=60", got)
		}
		if got := policy["user"]; got["q"] != 3 || got["w"] != 3600 {
			t.Errorf("user policy = %v, want q=3;w=3600", got)
		}
		state := parseLimitHeader(t, h, "RateLimit")
		if got := state["user"]; got["r"] != int64(3-i) || got["t"] < 1 || got["t"] > 3600 {
			t.Errorf("request %d: user state = %v, want r=%d and 1 <= t <= 3600", i, got, 3-i)
		}
		if got := state["address"]; got["r"] != int64(100-i) {
			t.Errorf("request %d: address state = %v, want r=%d", i, got, 100-i)
		}
	}

	// The refused answer: 429 with Retry-After, and the state says nothing
	// is left.
	status, h := limitGet(t, nil, env.Public.URL+"/v1/items", tok, "")
	mustBeLimited(t, status, h)
	if got := parseLimitHeader(t, h, "RateLimit")["user"]; got["r"] != 0 || got["t"] < 1 {
		t.Errorf("429: user state = %v, want r=0 and t >= 1", got)
	}

	// An answer refused after the limits were counted (404) carries them.
	status, h = limitGet(t, nil, env.Public.URL+"/v1/items/itm_unknown", userToken(t, "user-ratelimit-404"), "")
	if status != http.StatusNotFound || parseLimitHeader(t, h, "RateLimit")["user"]["r"] != 2 {
		t.Errorf("404: status %d, RateLimit %q", status, h.Get("RateLimit"))
	}

	// The internal listener counts per service.
	c := env.ServiceClient(t, "payments")
	status, h = limitGet(t, c, env.Internal.URL+"/internal/v1/accounts/acc_unknown", "", "")
	if status != http.StatusNotFound {
		t.Fatalf("internal: status %d", status)
	}
	if got := parseLimitHeader(t, h, "RateLimit-Policy")["service"]; got["q"] != 50 || got["w"] != 60 {
		t.Errorf("internal: service policy = %v, want q=50;w=60", got)
	}
	if got := parseLimitHeader(t, h, "RateLimit")["service"]; got["r"] != 49 {
		t.Errorf("internal: service state = %v, want r=49", got)
	}
}

// A sensitive operation's own limit is one more policy on its answers,
// named after the route.
func TestASensitiveOperationAnnouncesItsOwnPolicy(t *testing.T) {
	t.Parallel()
	limits := api.RateLimits{Subject: perMinute(100), Operations: map[string]ratelimit.Limit{api.OpLinkSession: perMinute(7)}}
	be := startBank(t, false, withLimits(limits))
	status, h, body := be.call(t, "POST", "/v1/link/sessions", userToken(t, "user-op-policy"), `{"products":["auth"]}`)
	if status != http.StatusCreated {
		t.Fatalf("status %d: %s", status, body)
	}
	got := parseLimitHeader(t, h, "RateLimit-Policy")["op:"+api.OpLinkSession]
	if got["q"] != 7 || got["w"] != 60 {
		t.Errorf("RateLimit-Policy = %q, want the operation's q=7;w=60", h.Get("RateLimit-Policy"))
	}
}
