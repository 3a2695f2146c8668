package plaid_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaid"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
)

// webhookFixture is a fake Plaid and an adapter sharing one fake clock.
func webhookFixture(t *testing.T, mutate ...func(*plaid.Options)) (*plaidtest.Server, *plaid.Provider, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	srv := newServer(t, plaidtest.WithClock(clock))
	mutate = append([]func(*plaid.Options){func(o *plaid.Options) { o.Clock = clock }}, mutate...)
	return srv, newProvider(t, srv, mutate...), clock
}

func TestAValidWebhookIsAccepted(t *testing.T) {
	t.Parallel()
	srv, p, _ := webhookFixture(t)
	wh := srv.LoginRequiredWebhook("item-1")
	ev, err := p.VerifyWebhook(context.Background(), wh.Header, wh.Body)
	if err != nil {
		t.Fatalf("VerifyWebhook: %v", err)
	}
	sum := sha256.Sum256(wh.Body)
	want := banklink.WebhookEvent{ID: ev.ID, Kind: banklink.EventLoginRequired, ProviderType: "ITEM", ProviderCode: "ERROR:ITEM_LOGIN_REQUIRED", ProviderItemID: "item-1"}
	if ev != want {
		t.Errorf("event = %+v, want %+v", ev, want)
	}
	// The ID names the delivery (its iat and body), not the body alone:
	// the same body delivered later is another event, a re-signed
	// redelivery the same one.
	if ev.ID == hex.EncodeToString(sum[:]) || len(ev.ID) != 64 {
		t.Errorf("event id = %q", ev.ID)
	}
	again, err := p.VerifyWebhook(context.Background(), srv.Redeliver(wh).Header, wh.Body)
	if err != nil || again.ID != ev.ID {
		t.Errorf("a redelivery = %+v, %v; want the same id", again, err)
	}
}

func TestForgedWebhooksAreRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		forgery plaidtest.Forgery
		// fetches is how many key fetches the refusal may cost.
		fetches int
		// reason is what the kept cause says, for logs.
		reason string
	}{
		{"HS256 keyed with the public key", plaidtest.HS256, 0, "algorithm not ES256"},
		{"alg none", plaidtest.AlgNone, 0, "algorithm not ES256"},
		{"RS256", plaidtest.RS256, 0, "algorithm not ES256"},
		{"iat six minutes old", plaidtest.StaleIat, 0, "iat too old"},
		{"iat five minutes ahead", plaidtest.FutureIat, 0, "iat in the future"},
		{"no iat", plaidtest.NoIat, 0, "no iat"},
		{"the hash of another body", plaidtest.BodyMismatch, 0, "body hash mismatch"},
		{"a kid Plaid never published", plaidtest.UnknownKid, 1, "kid unknown to Plaid"},
		{"a key Plaid has expired", plaidtest.ExpiredKey, 1, "key expired"},
		{"another key under the current kid", plaidtest.WrongKey, 1, "signature or claims invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, p, _ := webhookFixture(t)
			body := []byte(`{"webhook_type":"ITEM","webhook_code":"USER_PERMISSION_REVOKED","item_id":"item-1"}`)
			wh := srv.Sign(body, tt.forgery)
			_, err := p.VerifyWebhook(context.Background(), wh.Header, wh.Body)
			wantCode(t, err, banklink.CodeBadSignature)
			if cause := errors.Unwrap(err); cause == nil || !strings.Contains(cause.Error(), tt.reason) {
				t.Errorf("cause %v, want the reason %q", cause, tt.reason)
			}
			if n := srv.Calls(plaidtest.EndpointWebhookKeyGet); n > tt.fetches {
				t.Errorf("key fetches = %d, want at most %d", n, tt.fetches)
			}
		})
	}
}

func TestTamperedOrMissingSignaturesAreRefused(t *testing.T) {
	t.Parallel()
	srv, p, _ := webhookFixture(t)
	valid := srv.FireWebhook("item-1", "ITEM", "NEW_ACCOUNTS_AVAILABLE", nil)
	tok := valid.Header.Get(plaidtest.VerificationHeader)
	oneByte := append([]byte(nil), valid.Body...)
	oneByte[len(oneByte)-2] ^= 0x01
	flipSig := []byte(tok)
	flipSig[len(flipSig)-3] ^= 0x01
	tests := []struct {
		name   string
		header http.Header
		body   []byte
	}{
		{"one byte of the body changed", valid.Header, oneByte},
		{"an empty body", valid.Header, nil},
		{"no header", http.Header{}, valid.Body},
		{"an empty header", http.Header{plaidtest.VerificationHeader: {""}}, valid.Body},
		{"a garbage header", http.Header{plaidtest.VerificationHeader: {"not a jwt at all"}}, valid.Body},
		{"three dots of garbage", http.Header{plaidtest.VerificationHeader: {"a.b.c"}}, valid.Body},
		{"a changed signature", http.Header{plaidtest.VerificationHeader: {string(flipSig)}}, valid.Body},
		{"a huge header", http.Header{plaidtest.VerificationHeader: {tok + string(make([]byte, 5000))}}, valid.Body},
		{"the token twice", http.Header{plaidtest.VerificationHeader: {tok + "." + tok}}, valid.Body},
		{"the token without its signature", http.Header{plaidtest.VerificationHeader: {tok[:strings.LastIndex(tok, ".")+1]}}, valid.Body},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.VerifyWebhook(context.Background(), tt.header, tt.body)
			wantCode(t, err, banklink.CodeBadSignature)
		})
	}
	if _, err := p.VerifyWebhook(context.Background(), valid.Header, valid.Body); err != nil {
		t.Fatalf("the untouched webhook was refused: %v", err)
	}
}

func TestFreshnessFollowsTheClock(t *testing.T) {
	t.Parallel()
	srv, p, clock := webhookFixture(t)
	wh := srv.FireWebhook("item-1", "ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED", nil)
	clock.Advance(4*time.Minute + 59*time.Second)
	if _, err := p.VerifyWebhook(context.Background(), wh.Header, wh.Body); err != nil {
		t.Fatalf("a webhook just under five minutes old was refused: %v", err)
	}
	clock.Advance(2 * time.Second)
	_, err := p.VerifyWebhook(context.Background(), wh.Header, wh.Body)
	wantCode(t, err, banklink.CodeBadSignature)
}

func TestTheKeyIsFetchedOnceThenCached(t *testing.T) {
	t.Parallel()
	srv, p, clock := webhookFixture(t, func(o *plaid.Options) { o.WebhookKeyCacheTTL = time.Hour })
	for i := range 5 {
		wh := srv.FireWebhook("item-1", "ITEM", "NEW_ACCOUNTS_AVAILABLE", map[string]any{"n": i})
		if _, err := p.VerifyWebhook(context.Background(), wh.Header, wh.Body); err != nil {
			t.Fatalf("webhook %d: %v", i, err)
		}
	}
	if n := srv.Calls(plaidtest.EndpointWebhookKeyGet); n != 1 {
		t.Fatalf("key fetches = %d, want 1", n)
	}

	// After the TTL the key is fetched again, and an expiry is noticed.
	clock.Advance(time.Hour + time.Second)
	srv.ExpireKey(srv.CurrentKid())
	wh := srv.FireWebhook("item-1", "ITEM", "NEW_ACCOUNTS_AVAILABLE", nil)
	_, err := p.VerifyWebhook(context.Background(), wh.Header, wh.Body)
	wantCode(t, err, banklink.CodeBadSignature)
	if n := srv.Calls(plaidtest.EndpointWebhookKeyGet); n != 2 {
		t.Errorf("key fetches = %d, want 2", n)
	}

	// A rotated key is fetched under its new kid.
	srv.RotateKey()
	wh = srv.FireWebhook("item-1", "ITEM", "NEW_ACCOUNTS_AVAILABLE", nil)
	if _, err := p.VerifyWebhook(context.Background(), wh.Header, wh.Body); err != nil {
		t.Fatalf("webhook under a rotated key: %v", err)
	}
}

func TestUnknownKidsDoNotDriveKeyFetches(t *testing.T) {
	t.Parallel()
	srv, p, _ := webhookFixture(t)
	body := []byte(`{"webhook_type":"ITEM","webhook_code":"ERROR","item_id":"item-1"}`)
	forged := srv.Sign(body, plaidtest.UnknownKid)
	for range 3 {
		_, err := p.VerifyWebhook(context.Background(), forged.Header, forged.Body)
		wantCode(t, err, banklink.CodeBadSignature)
	}
	if n := srv.Calls(plaidtest.EndpointWebhookKeyGet); n != 1 {
		t.Errorf("one unknown kid cost %d fetches, want 1", n)
	}
	for i := range 20 {
		wh := srv.Sign(body, plaidtest.UnknownKid) // a new kid each time
		_, err := p.VerifyWebhook(context.Background(), wh.Header, wh.Body)
		if i < 2 {
			wantCode(t, err, banklink.CodeBadSignature) // fetched: Plaid does not know it
		} else {
			// Budget spent: not checked, so not called bad (Plaid would
			// give up on a genuine webhook), but "try again later".
			wantCode(t, err, banklink.CodeWebhookKeyUnavailable)
		}
	}
	if n := srv.Calls(plaidtest.EndpointWebhookKeyGet); n > 3 {
		t.Errorf("21 unknown kids cost %d fetches, want at most the burst of 3", n)
	}
}

// knownItems is a banklink.WebhookItemCheck for the items of ids.
func knownItems(ids ...string) context.Context {
	return banklink.WithWebhookItemCheck(context.Background(), func(_ context.Context, id string) bool {
		return slices.Contains(ids, id)
	})
}

// TestForgedKidsDoNotBlockAGenuineWebhookAfterRotation is the attack: Plaid
// rotates its key, and forged webhooks with random kids (naming items kluis
// does not hold) flood in, concurrently with Plaid's genuine ones under the
// new kid. A genuine webhook is never refused as a bad signature: it is
// accepted, or told to come back (503) and accepted on Plaid's retry.
func TestForgedKidsDoNotBlockAGenuineWebhookAfterRotation(t *testing.T) {
	t.Parallel()
	srv, p, _ := webhookFixture(t)
	ctx := knownItems("item-1", "item-2")
	first := srv.FireWebhook("item-1", "ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED", nil)
	if _, err := p.VerifyWebhook(ctx, first.Header, first.Body); err != nil {
		t.Fatalf("webhook under the first key: %v", err)
	}
	srv.RotateKey()

	var wg sync.WaitGroup
	var accepted, deferred atomic.Int64
	for g := range 16 {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := range 20 {
				body := fmt.Appendf(nil, `{"webhook_type":"ITEM","webhook_code":"USER_PERMISSION_REVOKED","item_id":"forged-%d-%d"}`, g, i)
				wh := srv.Sign(body, plaidtest.UnknownKid)
				_, err := p.VerifyWebhook(ctx, wh.Header, wh.Body)
				if code := kluis.ErrorCode(err); code != banklink.CodeBadSignature && code != banklink.CodeWebhookKeyUnavailable {
					t.Errorf("a forged webhook got %q (%v)", code, err)
				}
			}
		}(g)
		if g%4 == 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				wh := srv.FireWebhook("item-2", "ITEM", "USER_PERMISSION_REVOKED", nil)
				_, err := p.VerifyWebhook(ctx, wh.Header, wh.Body)
				switch kluis.ErrorCode(err) {
				case "":
					accepted.Add(1)
				case banklink.CodeWebhookKeyUnavailable:
					deferred.Add(1)
				default:
					t.Errorf("a genuine webhook was refused: %v", err)
				}
			}()
		}
	}
	wg.Wait()
	if accepted.Load() == 0 {
		t.Errorf("no genuine webhook was accepted during the flood (%d deferred)", deferred.Load())
	}
	// Plaid's retry, once more forged kids have spent the shared lane.
	for range 10 {
		wh := srv.Sign([]byte(`{"item_id":"forged"}`), plaidtest.UnknownKid)
		_, _ = p.VerifyWebhook(ctx, wh.Header, wh.Body)
	}
	retry := srv.FireWebhook("item-1", "ITEM", "USER_PERMISSION_REVOKED", nil)
	if _, err := p.VerifyWebhook(ctx, retry.Header, retry.Body); err != nil {
		t.Fatalf("a genuine webhook after the flood: %v", err)
	}
	// Forged kids cost fetches only within the two lanes' bursts.
	if n := srv.Calls(plaidtest.EndpointWebhookKeyGet); n > 1+3+3 {
		t.Errorf("key fetches = %d, want at most 7", n)
	}
}

// TestAGenuineWebhookNamingNoKnownItemIsDeferredNotRefused: when the shared
// lane is spent and the webhook names no item kluis holds, it is answered
// "later" (503), and Plaid's retry, once the lane has refilled, is accepted.
func TestAGenuineWebhookNamingNoKnownItemIsDeferredNotRefused(t *testing.T) {
	t.Parallel()
	srv, p, clock := webhookFixture(t)
	srv.RotateKey()
	for range 10 {
		wh := srv.Sign([]byte(`{"item_id":"forged"}`), plaidtest.UnknownKid)
		_, _ = p.VerifyWebhook(context.Background(), wh.Header, wh.Body)
	}
	wh := srv.FireWebhook("item-unknown", "ITEM", "USER_PERMISSION_REVOKED", nil)
	_, err := p.VerifyWebhook(knownItems("item-1"), wh.Header, wh.Body)
	wantCode(t, err, banklink.CodeWebhookKeyUnavailable)
	clock.Advance(plaid.DefaultWebhookKeyFetchInterval)
	retry := srv.FireWebhook("item-unknown", "ITEM", "USER_PERMISSION_REVOKED", nil)
	if _, err := p.VerifyWebhook(knownItems("item-1"), retry.Header, retry.Body); err != nil {
		t.Fatalf("Plaid's retry was refused: %v", err)
	}
}

// TestOneKnownItemCannotDrainTheKnownItemsLane: a forger who knows one
// Plaid item id gets one fetch a minute through it, not the lane.
func TestOneKnownItemCannotDrainTheKnownItemsLane(t *testing.T) {
	t.Parallel()
	srv, p, _ := webhookFixture(t)
	ctx := knownItems("leaked", "item-2")
	for range 10 {
		wh := srv.Sign([]byte(`{"item_id":"leaked"}`), plaidtest.UnknownKid)
		_, _ = p.VerifyWebhook(ctx, wh.Header, wh.Body)
	}
	before := srv.Calls(plaidtest.EndpointWebhookKeyGet)
	if before > 3+1 {
		t.Errorf("ten forged kids naming one item cost %d fetches, want the shared burst and one", before)
	}
	wh := srv.FireWebhook("item-2", "ITEM", "USER_PERMISSION_REVOKED", nil)
	if _, err := p.VerifyWebhook(ctx, wh.Header, wh.Body); err != nil {
		t.Fatalf("a genuine webhook for another item: %v", err)
	}
}

// TestACachedKeyPlaidExpiresIsRefused: the background refresh notices
// expired_at well before the cache TTL.
func TestACachedKeyPlaidExpiresIsRefused(t *testing.T) {
	t.Parallel()
	srv, p, clock := webhookFixture(t, func(o *plaid.Options) { o.WebhookKeyCacheTTL = 24 * time.Hour })
	wh := srv.FireWebhook("item-1", "ITEM", "NEW_ACCOUNTS_AVAILABLE", nil)
	if _, err := p.VerifyWebhook(context.Background(), wh.Header, wh.Body); err != nil {
		t.Fatal(err)
	}
	srv.ExpireKey(srv.CurrentKid())
	clock.Advance(time.Hour + time.Second)
	// This one is checked against the cached key while the refresh runs.
	for i := 0; ; i++ {
		wh := srv.FireWebhook("item-1", "ITEM", "NEW_ACCOUNTS_AVAILABLE", map[string]any{"n": i})
		_, err := p.VerifyWebhook(context.Background(), wh.Header, wh.Body)
		if kluis.ErrorCode(err) == banklink.CodeBadSignature {
			break
		}
		if err != nil || i > 2000 {
			t.Fatalf("the expired key is still used after %d webhooks: %v", i, err)
		}
		time.Sleep(time.Millisecond)
	}
	if n := srv.Calls(plaidtest.EndpointWebhookKeyGet); n != 2 {
		t.Errorf("key fetches = %d, want 2 (one refresh)", n)
	}
}

func TestAKeyFetchPlaidCannotAnswerIsUnavailable(t *testing.T) {
	t.Parallel()
	srv, p, _ := webhookFixture(t, func(o *plaid.Options) { o.MaxRetries = -1 })
	srv.FailNext(plaidtest.EndpointWebhookKeyGet, 1, "INTERNAL_SERVER_ERROR")
	wh := srv.FireWebhook("item-1", "ITEM", "ERROR", nil)
	_, err := p.VerifyWebhook(context.Background(), wh.Header, wh.Body)
	wantCode(t, err, kluis.EUnavailable)
	// Plaid retries the webhook; by then the key can be fetched.
	if _, err := p.VerifyWebhook(context.Background(), wh.Header, wh.Body); err != nil {
		t.Fatalf("the retried webhook was refused: %v", err)
	}
}

func TestWebhookKinds(t *testing.T) {
	t.Parallel()
	srv, p, _ := webhookFixture(t)
	loginErr := map[string]any{"error": map[string]any{"error_code": "ITEM_LOGIN_REQUIRED", "error_type": "ITEM_ERROR"}}
	otherErr := map[string]any{"error": map[string]any{"error_code": "INSTITUTION_DOWN", "error_type": "INSTITUTION_ERROR"}}
	tests := []struct {
		name        string
		typ, code   string
		extra       map[string]any
		want        string
		wantCodeStr string
	}{
		{"an item error asking for a login", "ITEM", "ERROR", loginErr, banklink.EventLoginRequired, "ERROR:ITEM_LOGIN_REQUIRED"},
		{"another item error", "ITEM", "ERROR", otherErr, banklink.EventItemError, "ERROR:INSTITUTION_DOWN"},
		{"consent about to expire", "ITEM", "PENDING_EXPIRATION", map[string]any{"consent_expiration_time": "2025-04-01T00:00:00Z"}, banklink.EventLoginRequired, "PENDING_EXPIRATION"},
		{"a pending disconnect", "ITEM", "PENDING_DISCONNECT", map[string]any{"reason": "INSTITUTION_MIGRATION"}, banklink.EventLoginRequired, "PENDING_DISCONNECT"},
		{"consent revoked", "ITEM", "USER_PERMISSION_REVOKED", nil, banklink.EventRevoked, "USER_PERMISSION_REVOKED"},
		{"consent to one account revoked", "ITEM", "USER_ACCOUNT_REVOKED", map[string]any{"account_id": "acct-7"}, banklink.EventAccountRevoked, "USER_ACCOUNT_REVOKED"},
		{"an account revocation naming no account", "ITEM", "USER_ACCOUNT_REVOKED", nil, banklink.EventUnknown, "USER_ACCOUNT_REVOKED"},
		{"new accounts", "ITEM", "NEW_ACCOUNTS_AVAILABLE", nil, banklink.EventNewAccounts, "NEW_ACCOUNTS_AVAILABLE"},
		{"a repaired login", "ITEM", "LOGIN_REPAIRED", nil, banklink.EventLoginRepaired, "LOGIN_REPAIRED"},
		{"a webhook URL acknowledged", "ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED", map[string]any{"new_webhook_url": "https://kluis.test/w"}, banklink.EventWebhookUpdated, "WEBHOOK_UPDATE_ACKNOWLEDGED"},
		{"a user's account revoked", "ITEM", "USER_ACCOUNT_REVOKED", map[string]any{"account_id": "acc-1"}, banklink.EventAccountRevoked, "USER_ACCOUNT_REVOKED"},
		{"micro-deposits verified", "AUTH", "AUTOMATICALLY_VERIFIED", map[string]any{"account_id": "acc-1"}, banklink.EventAuthVerified, "AUTOMATICALLY_VERIFIED"},
		{"micro-deposits expired", "AUTH", "VERIFICATION_EXPIRED", map[string]any{"account_id": "acc-1"}, banklink.EventAuthExpired, "VERIFICATION_EXPIRED"},
		{"auth permission withdrawn", "AUTH", "PRODUCT_PERMISSIONS_REQUIRED", nil, banklink.EventLoginRequired, "PRODUCT_PERMISSIONS_REQUIRED"},
		{"auth numbers changed", "AUTH", "DEFAULT_UPDATE", nil, banklink.EventUnknown, "DEFAULT_UPDATE"},
		{"an auth event naming no account", "AUTH", "AUTOMATICALLY_VERIFIED", nil, banklink.EventUnknown, "AUTOMATICALLY_VERIFIED"},
		{"a transactions update", "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", nil, banklink.EventUnknown, "SYNC_UPDATES_AVAILABLE"},
		{"an auth webhook with the same code", "AUTH", "USER_PERMISSION_REVOKED", nil, banklink.EventUnknown, "USER_PERMISSION_REVOKED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wh := srv.FireWebhook("item-9", tt.typ, tt.code, tt.extra)
			ev, err := p.VerifyWebhook(context.Background(), wh.Header, wh.Body)
			if err != nil {
				t.Fatalf("VerifyWebhook: %v", err)
			}
			if ev.Kind != tt.want || ev.ProviderType != tt.typ || ev.ProviderCode != tt.wantCodeStr || ev.ProviderItemID != "item-9" {
				t.Errorf("event = %+v, want kind %s", ev, tt.want)
			}
			if want, _ := tt.extra["account_id"].(string); ev.Kind == banklink.EventAccountRevoked && (want == "" || ev.ProviderAccountID != want) {
				t.Errorf("event = %+v: the revoked account is not named", ev)
			}
		})
	}
}

func TestASignedBodyThatIsNotJSONIsABadRequest(t *testing.T) {
	t.Parallel()
	srv, p, _ := webhookFixture(t)
	wh := srv.Sign([]byte("not json"), plaidtest.Valid)
	_, err := p.VerifyWebhook(context.Background(), wh.Header, wh.Body)
	wantCode(t, err, kluis.EInvalid)
}
