package stitch

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
)

// FuzzDecoders feeds the adapter's decoders what a sealed credential, a
// public token, an id token and a callback query could hold: none may
// panic, and whatever they accept must round-trip.
func FuzzDecoders(f *testing.F) {
	good := bundle{Access: "ut", Refresh: "rt", Expires: 1700000000, User: "user-1"}.encode()
	f.Add(good)
	f.Add(callback{State: "lks_x.y", Code: "c0de"}.encode())
	f.Add("stitch-v1.")
	f.Add("stitch-code.e30")
	f.Add("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.sig")
	f.Add("code=abc&state=lks_x.y")
	f.Add("error=access_denied&state=s")
	f.Fuzz(func(t *testing.T, s string) {
		if b, err := decodeBundle(s); err == nil {
			if again, err := decodeBundle(b.encode()); err != nil || again != b {
				t.Fatalf("a bundle does not round-trip")
			}
		}
		if c, err := decodeCallback(s); err == nil {
			if again, err := decodeCallback(c.encode()); err != nil || again != c {
				t.Fatalf("a public token does not round-trip")
			}
		}
		_ = idTokenSubject(s)
		_ = maskOf(s)
		p := &Provider{}
		if q, err := url.ParseQuery(s); err == nil {
			if pub, err := p.PublicTokenFromCallback(q); err == nil {
				if _, err := decodeCallback(pub); err != nil {
					t.Fatalf("the callback made a public token the exchange cannot read")
				}
			}
		}
	})
}

type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

// FuzzVerifyWebhook feeds webhook bodies and headers to the verifier: none
// may panic, and only a body signed with the secret passes.
func FuzzVerifyWebhook(f *testing.F) {
	const secret = "whsec_c3RpdGNodGVzdC13ZWJob29rLXNlY3JldA=="
	now := time.Unix(1700000000, 0)
	p, err := New(Options{ClientID: "c", ClientSecret: "s", BaseURL: "https://api.test", AuthURL: "https://auth.test",
		RedirectURI: "https://kluis.test/link/callback/stitch", WebhookSecret: secret, Clock: fixedClock(now)})
	if err != nil {
		f.Fatal(err)
	}
	var _ kluis.Clock = fixedClock(now)
	f.Add(`{"type":"user.reauthorization_required","data":{"userId":"u"}}`, "msg_1", "1700000000", "")
	f.Add(`{"type":"bank_account_verification.completed","data":{"id":"bav_1"}}`, "msg_2", "1700000000", "v1,AAAA")
	f.Add(`not json`, "", "x", "v1")
	f.Fuzz(func(t *testing.T, body, id, ts, sig string) {
		h := http.Header{"Svix-Id": {id}, "Svix-Timestamp": {ts}, "Svix-Signature": {sig}}
		if _, err := p.VerifyWebhook(context.Background(), h, []byte(body)); err == nil && !strings.Contains(sig, Sign(secret, id, ts, []byte(body))[3:]) {
			t.Fatalf("an unsigned webhook was accepted")
		}
		h.Set("Svix-Signature", Sign(secret, id, ts, []byte(body)))
		_, _ = p.VerifyWebhook(context.Background(), h, []byte(body))
	})
}
