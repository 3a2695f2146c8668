package sandbox

import (
	"context"
	"encoding/hex"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/postgres"
)

var fuzzIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)

// FuzzVerifyWebhook feeds arbitrary signature headers and bodies to the
// sandbox's webhook verification: it never panics, refuses anything it
// cannot verify with bad_signature or a 400, and what it accepts carries a
// well-formed event id. The seeds include correctly signed bodies, so the
// fuzzer also mutates from accepted inputs.
func FuzzVerifyWebhook(f *testing.F) {
	secret := []byte("fuzz-sandbox-secret-0123456789abcdef-0123")
	now := time.Unix(1_800_000_000, 0)
	p, err := New(Options{DB: &postgres.DB{}, Secret: secret, Clock: fixedClock{now}})
	if err != nil {
		f.Fatal(err)
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	for _, body := range []string{
		`{"event_id":"evt_1","webhook_type":"ITEM","webhook_code":"LOGIN_REQUIRED","item_id":"x"}`,
		`{"event_id":"evt_2","webhook_type":"ITEM","webhook_code":"NEW_ACCOUNTS"}`, `not json`, `{}`,
	} {
		f.Add("t="+ts+",v1="+signHex(p, ts, []byte(body)), []byte(body))
	}
	f.Add("t=abc,v1=zz", []byte(`{}`))
	f.Add("", []byte(``))
	f.Fuzz(func(t *testing.T, sig string, body []byte) {
		h := http.Header{}
		h.Set(SignatureHeader, sig)
		ev, err := p.VerifyWebhook(context.Background(), h, body)
		if err != nil {
			if c := kluis.ErrorCode(err); c != banklink.CodeBadSignature && c != kluis.EInvalid {
				t.Fatalf("refusal with code %q", c)
			}
			return
		}
		if !fuzzIDPattern.MatchString(ev.ID) {
			t.Fatalf("accepted an event with id %q", ev.ID)
		}
	})
}

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

func signHex(p *Provider, ts string, body []byte) string {
	return hex.EncodeToString(p.mac(ts, body))
}
