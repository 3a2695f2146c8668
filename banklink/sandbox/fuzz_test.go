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
		`{"webhook_type":"ITEM","webhook_code":"ERROR","item_id":"x","error":{"error_type":"ITEM_ERROR","error_code":"ITEM_LOGIN_REQUIRED","error_message":"m","display_message":null},"environment":"sandbox"}`,
		`{"webhook_type":"AUTH","webhook_code":"AUTOMATICALLY_VERIFIED","item_id":"x","account_id":"a","error":"x","environment":"sandbox"}`,
		`{"webhook_type":"ITEM","webhook_code":"NEW_ACCOUNTS_AVAILABLE"}`, `not json`, `{}`,
	} {
		f.Add("t="+ts+",id=whd_1,v1="+signHex(p, ts, "whd_1", []byte(body)), []byte(body))
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

func signHex(p *Provider, ts, id string, body []byte) string {
	return hex.EncodeToString(p.mac(ts, id, body))
}
