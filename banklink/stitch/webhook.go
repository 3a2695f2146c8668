package stitch

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kluis-dev/kluis/banklink"
)

// webhookTolerance bounds how far a webhook's timestamp may be from now.
const webhookTolerance = 5 * time.Minute

// Webhook types kluis acts on (everything else is recorded, ignored).
const (
	WebhookReauthorizationRequired = "user.reauthorization_required"
	WebhookConsentRevoked          = "user.consent_revoked"
	WebhookBankAccountVerification = "bank_account_verification.completed"
)

// webhookBody is the part of a Stitch webhook kluis reads.
type webhookBody struct {
	Type string `json:"type"`
	Data struct {
		UserID string `json:"userId"`
		ID     string `json:"id"`
	} `json:"data"`
}

// VerifyWebhook checks a Stitch webhook's Svix signature (HMAC-SHA256 under
// the webhook secret over "<svix-id>.<svix-timestamp>.<body>", the
// timestamp within 5 minutes) and parses it. The event id is svix-id, the
// same on every redelivery.
func (p *Provider) VerifyWebhook(_ context.Context, header http.Header, body []byte) (banklink.WebhookEvent, error) {
	id, ts, sigs := header.Get("svix-id"), header.Get("svix-timestamp"), header.Get("svix-signature")
	if len(p.webhookKey) == 0 || id == "" || ts == "" || sigs == "" || len(id) > 128 {
		return banklink.WebhookEvent{}, badSignature()
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return banklink.WebhookEvent{}, badSignature()
	}
	if d := p.clock.Now().Sub(time.Unix(secs, 0)); d > webhookTolerance || d < -webhookTolerance {
		return banklink.WebhookEvent{}, badSignature()
	}
	if !p.signedBy(id, ts, body, sigs) {
		return banklink.WebhookEvent{}, badSignature()
	}
	var wb webhookBody
	if err := json.Unmarshal(body, &wb); err != nil {
		return banklink.WebhookEvent{}, providerError(banklink.CodeProviderError, "stitch webhook: malformed body", nil)
	}
	ev := banklink.WebhookEvent{ID: "stitch:" + safeToken(id), Kind: banklink.EventUnknown,
		ProviderType: safeToken(wb.Type), ProviderItemID: safeToken(wb.Data.UserID)}
	switch wb.Type {
	case WebhookReauthorizationRequired:
		ev.Kind = banklink.EventLoginRequired
	case WebhookConsentRevoked:
		ev.Kind = banklink.EventRevoked
	case WebhookBankAccountVerification:
		ev.Kind = banklink.EventBankAccountVerification
		ev.ProviderCode = safeToken(wb.Data.ID)
	}
	return ev, nil
}

// signedBy reports whether one of the space-separated "v1,<base64>"
// signatures is the body's.
func (p *Provider) signedBy(id, ts string, body []byte, sigs string) bool {
	m := hmac.New(sha256.New, p.webhookKey)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	want := m.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		v, sig, ok := strings.Cut(s, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

// Sign is the svix-signature of body for id and ts under a whsec_ secret,
// for Stitch's test server and tests.
func Sign(secret, id, ts string, body []byte) string {
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func badSignature() error {
	return providerError(banklink.CodeBadSignature, "stitch webhook: bad signature", nil)
}
