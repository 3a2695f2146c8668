package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader carries the signature of a delivery.
const SignatureHeader = "Kluis-Signature"

// Sign returns the Kluis-Signature value for body sent at unix time t:
// "t=<unix>,v1=<hex HMAC-SHA256 under secret of "<t>.<body>">".
func Sign(secret []byte, t int64, body []byte) string {
	return SignAll([][]byte{secret}, t, body)
}

// SignAll is Sign with every one of secrets: one v1 value each, in order
// ("t=<unix>,v1=<new>,v1=<old>" during a rotation, as Stripe does), so that
// a receiver that knows either secret can verify the delivery.
func SignAll(secrets [][]byte, t int64, body []byte) string {
	ts := strconv.FormatInt(t, 10)
	var b strings.Builder
	b.WriteString("t=" + ts)
	for _, s := range secrets {
		b.WriteString(",v1=" + hex.EncodeToString(mac(s, ts, body)))
	}
	return b.String()
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Errors of VerifySignature.
var (
	ErrBadSignature = errors.New("events: bad signature")
	ErrStale        = errors.New("events: signature timestamp outside the tolerance")
)

// VerifySignature checks a Kluis-Signature header over body as a receiver
// should: the timestamp within tolerance of now, and one v1 value equal (in
// constant time) to the HMAC of "<t>.<body>". Several v1 values are allowed,
// so that a secret can be rotated.
func VerifySignature(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(t, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return ErrBadSignature
}
