package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/sandbox"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
	"github.com/kluis-dev/kluis/verification/sandboxrail"
)

// gatedSandbox is the sandbox provider with two doors a test opens: an
// exchange that, armed, stops after the provider has issued the token (the
// token is live at the provider) until release is closed; and removal,
// which can refuse, or run a hook first (to place a hold mid-revoke).
type gatedSandbox struct {
	*sandbox.Provider
	armed    atomic.Bool
	entered  chan struct{}
	release  chan struct{}
	refuse   atomic.Bool
	onRemove atomic.Pointer[func()]
	removes  atomic.Int32 // RemoveItem calls
	onRotate atomic.Pointer[func()]
}

// RotateAccessToken runs the test's hook, if any, once the provider has
// rotated (the old token is dead, the fresh one exists only in the answer).
func (g *gatedSandbox) RotateAccessToken(ctx context.Context, token string) (string, error) {
	fresh, err := g.Provider.RotateAccessToken(ctx, token)
	if f := g.onRotate.Swap(nil); f != nil && err == nil {
		(*f)()
	}
	return fresh, err
}

func (g *gatedSandbox) ExchangePublicToken(ctx context.Context, publicToken string) (banklink.Exchange, error) {
	ex, err := g.Provider.ExchangePublicToken(ctx, publicToken)
	if err == nil && g.armed.CompareAndSwap(true, false) {
		close(g.entered)
		<-g.release
	}
	return ex, err
}

func (g *gatedSandbox) RemoveItem(ctx context.Context, token string) error {
	g.removes.Add(1)
	if f := g.onRemove.Swap(nil); f != nil {
		(*f)()
	}
	if g.refuse.Load() {
		return kluis.Wrap(kluis.EInternal, "the provider refused", banklink.ErrProvider)
	}
	return g.Provider.RemoveItem(ctx, token)
}

// fenceEnv is kluis with bank linking on the gated sandbox, verification,
// and compliance erasing through the real key ring with bank linking as
// its revoker.
type fenceEnv struct {
	*bankEnv
	gate *gatedSandbox
	comp *compliance.Service
}

func startFence(t *testing.T, opts ...func(*banklink.Options)) *fenceEnv {
	t.Helper()
	fe := &fenceEnv{bankEnv: &bankEnv{}, gate: &gatedSandbox{entered: make(chan struct{}), release: make(chan struct{})}}
	late := &lateRing{}
	fe.Env = apitest.Start(t, func(d *api.Deps) {
		keys := d.Pseudonyms.(*vault.SystemKeys)
		sb, err := sandbox.New(sandbox.Options{DB: d.DB, Secret: sandboxSecret})
		if err != nil {
			t.Fatal(err)
		}
		fe.gate.Provider, fe.sandbox = sb, sb
		o := banklink.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Provider: fe.gate, Keys: keys, Logger: d.Logger}
		for _, opt := range opts {
			opt(&o)
		}
		svc, err := banklink.New(o)
		if err != nil {
			t.Fatal(err)
		}
		fe.svc, d.BankLink = svc, svc
		ver, err := verification.New(verification.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Accounts: banklink.NewAccountStore(d.DB), Keys: keys,
			Rail: sandboxrail.New(d.DB, keys, 0, &testClock{}), Logger: d.Logger})
		if err != nil {
			t.Fatal(err)
		}
		d.Verification = ver
		fe.comp = compliance.NewService(d.DB, d.Auditor, late, nil)
		fe.comp.AddRevoker(svc)
		fe.comp.SetRevokeAttempts(2)
		d.Compliance = fe.comp
		limits := api.DefaultRateLimits()
		limits.Operations = nil
		d.RateLimits = &limits
	})
	late.ring = fe.Ring
	return fe
}

// erase requests (staff_a) and approves (staff_b) the erasure of sub, and
// returns the request id and the approval's answer.
func (fe *fenceEnv) erase(t *testing.T, sub string) (string, int, erasureBody) {
	t.Helper()
	console := fe.ServiceClient(t, "compliance-console")
	status, _, body := apitest.Do(t, console, "POST", fe.Internal.URL+"/compliance/v1/erasure-requests", staff(t, "staff_a"),
		"application/json", `{"subject_id":"`+sub+`","reason":"TICKET-10"}`)
	if status != 201 {
		t.Fatalf("request erasure = %d %s", status, body)
	}
	id := decode[erasureBody](t, body).ID
	status, body2 := fe.approve(t, id)
	var got erasureBody
	_ = json.Unmarshal([]byte(body2), &got)
	return id, status, got
}

func (fe *fenceEnv) approve(t *testing.T, id string) (int, string) {
	t.Helper()
	status, _, body := apitest.Do(t, fe.ServiceClient(t, "compliance-console"), "POST",
		fe.Internal.URL+"/compliance/v1/erasure-requests/"+id+"/approve", staff(t, "staff_b"), "", "")
	return status, body
}

func (fe *fenceEnv) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := fe.DB.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// liveAtProvider counts the sandbox's items whose token still works.
func (fe *fenceEnv) liveAtProvider(t *testing.T) int {
	return fe.count(t, `SELECT count(*) FROM sandbox_items WHERE removed_at IS NULL`)
}

type rawAnswer struct {
	status int
	body   string
}

// send is a public request that is safe from any goroutine.
func (fe *fenceEnv) send(method, path, token, body, idemKey string) rawAnswer {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, fe.Public.URL+path, r)
	if err != nil {
		return rawAnswer{0, err.Error()}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return rawAnswer{0, err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawAnswer{resp.StatusCode, string(b)}
}

func mustErasing(t *testing.T, what string, a rawAnswer) {
	t.Helper()
	var e struct {
		Error struct {
			Code, Message, RequestID string
		} `json:"error"`
	}
	if a.status != 409 || json.Unmarshal([]byte(a.body), &e) != nil || e.Error.Code != kluis.ESubjectErasing || e.Error.Message == "" {
		t.Errorf("%s during the erasure = %d %s, want 409 %s", what, a.status, a.body, kluis.ESubjectErasing)
	}
}

// Break 3: an exchange that started before the approval and finishes
// during the run must not leave an item live at the provider, and the
// receipt must count what was revoked.
func TestAnExchangeInFlightWhenTheErasureIsApprovedIsRefusedAndRevokedAtTheProvider(t *testing.T) {
	fe := startFence(t)
	const sub = "user_racing_exchange"
	tok := userToken(t, sub)
	fe.linkSandbox(t, tok, "ins_sandbox")
	s := fe.newSession(t, tok, "")
	pt := fe.sandboxPublicToken(t, tok, s.ID, "ins_sandbox")

	fe.gate.armed.Store(true)
	answer := make(chan rawAnswer, 1)
	go func() {
		answer <- fe.send("POST", "/v1/link/sessions/"+s.ID+"/exchange", tok, fmt.Sprintf(`{"public_token":%q}`, pt), "")
	}()
	<-fe.gate.entered // the provider has issued the second token

	id, status, got := fe.erase(t, sub)
	if status != 200 || got.Status != compliance.ErasureApproved {
		t.Fatalf("approve with an exchange in flight = %d %+v, want 200 approved (the run waits for it)", status, got)
	}
	if n := fe.count(t, `SELECT count(*) FROM keystore.subject_keys k JOIN subjects s ON s.id = k.subject_id WHERE s.external_id = $1`, sub); n == 0 {
		t.Fatal("the keys were destroyed while an exchange was in flight: its token could never be revoked")
	}
	close(fe.gate.release)
	mustErasing(t, "the exchange in flight", <-answer)

	status, body := fe.approve(t, id)
	done := decode[erasureBody](t, body)
	if status != 200 || done.Status != compliance.ErasureCompleted || done.Receipt == nil {
		t.Fatalf("the run after the exchange ended = %d %s", status, body)
	}
	if n := fe.liveAtProvider(t); n != 0 {
		t.Errorf("%d items are still live at the provider after the erasure", n)
	}
	if rc := done.Receipt; rc.ProviderItemsRevoked != 1 || rc.Erased["items"] != 1 {
		t.Errorf("receipt counts %d revoked and %d items erased; one item was linked, and revoked", rc.ProviderItemsRevoked, rc.Erased["items"])
	}
	if n := fe.count(t, `SELECT count(*) FROM audit_entries WHERE action = 'subject.write_refused' AND outcome = 'denied'`); n != 1 {
		t.Errorf("refused writes audited = %d, want 1", n)
	}
}

// Break 3 under load: users keep exchanging while the erasure is approved.
// Every exchange either committed before the approval (and the run revoked
// its item, and counts it) or was refused; nothing is live at the provider.
func TestExchangesRacingAnErasureEndRevokedOrRefusedAndTheReceiptCountsThem(t *testing.T) {
	fe := startFence(t)
	const sub = "user_racing_many"
	tok := userToken(t, sub)
	fe.linkSandbox(t, tok, "ins_sandbox")
	const racers = 8
	type prepared struct{ session, token string }
	ready := make([]prepared, racers)
	for i := range ready {
		s := fe.newSession(t, tok, "")
		ready[i] = prepared{s.ID, fe.sandboxPublicToken(t, tok, s.ID, "ins_sandbox")}
	}
	console := fe.ServiceClient(t, "compliance-console")
	status, _, body := apitest.Do(t, console, "POST", fe.Internal.URL+"/compliance/v1/erasure-requests", staff(t, "staff_a"),
		"application/json", `{"subject_id":"`+sub+`","reason":"TICKET-11"}`)
	if status != 201 {
		t.Fatalf("request = %d %s", status, body)
	}
	id := decode[erasureBody](t, body).ID

	var wg sync.WaitGroup
	answers := make([]rawAnswer, racers)
	start := make(chan struct{})
	for i, p := range ready {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			answers[i] = fe.send("POST", "/v1/link/sessions/"+p.session+"/exchange", tok, fmt.Sprintf(`{"public_token":%q}`, p.token), "")
		}()
	}
	close(start)
	status, _ = fe.approve(t, id)
	wg.Wait()
	if status != 200 {
		t.Fatalf("approve = %d", status)
	}
	linked, refused := 1, 0
	for i, a := range answers {
		switch a.status {
		case 201:
			linked++
		case 404:
			// The approval's own run completed before this exchange
			// looked its session up: the session went with the subject.
		default:
			mustErasing(t, fmt.Sprintf("exchange %d", i), a)
			refused++
		}
	}
	// Whatever the interleaving, a later run completes it.
	for i := 0; i < 3; i++ {
		if _, err := fe.comp.ResumeErasures(context.Background()); err == nil {
			break
		}
	}
	got, err := fe.comp.GetErasure(context.Background(), id)
	if err != nil || got.Status != compliance.ErasureCompleted {
		t.Fatalf("erasure = %+v, %v", got, err)
	}
	if n := fe.liveAtProvider(t); n != 0 {
		t.Errorf("%d items are still live at the provider after the erasure", n)
	}
	if got.Receipt.ProviderItemsRevoked != linked || got.Receipt.Erased["items"] != int64(linked) {
		t.Errorf("receipt: %d revoked, %d items erased; %d items were linked", got.Receipt.ProviderItemsRevoked, got.Receipt.Erased["items"], linked)
	}
	if n := fe.count(t, `SELECT count(*) FROM audit_entries WHERE action = 'subject.write_refused'`); n != refused {
		t.Errorf("refused exchanges audited = %d, want %d", n, refused)
	}
}

// Break 4: a hold committed while the run revokes at the provider stops it
// before anything is destroyed in kluis: no credential destroyed, keys
// intact, no further item revoked.
func TestAHoldCommittedDuringTheRevokeStepStopsTheRunBeforeAnythingIsDestroyed(t *testing.T) {
	fe := startFence(t)
	const sub = "user_held_mid_revoke"
	tok := userToken(t, sub)
	fe.linkSandbox(t, tok, "ins_sandbox")
	fe.linkSandbox(t, tok, "ins_sandbox")
	creds := fe.count(t, `SELECT count(*) FROM credentials c JOIN subjects s ON s.id = c.subject_id WHERE s.external_id = $1`, sub)
	keys := fe.count(t, `SELECT count(*) FROM keystore.subject_keys k JOIN subjects s ON s.id = k.subject_id WHERE s.external_id = $1`, sub)
	if creds == 0 || keys == 0 {
		t.Fatalf("setup: %d credentials, %d keys", creds, keys)
	}
	placed := make(chan error, 1)
	hook := func() {
		_, err := fe.comp.PlaceHold(context.Background(), compliance.Staff{ID: "staff_c"}, sub, "CASE-4")
		placed <- err
	}
	fe.gate.onRemove.Store(&hook)

	id, status, _ := fe.erase(t, sub)
	if err := <-placed; err != nil {
		t.Fatalf("place hold mid-revoke: %v", err)
	}
	if status != 409 {
		t.Fatalf("approve with a hold placed mid-revoke = %d, want 409 legal_hold", status)
	}
	if n := fe.count(t, `SELECT count(*) FROM credentials c JOIN subjects s ON s.id = c.subject_id WHERE s.external_id = $1`, sub); n != creds {
		t.Errorf("credentials destroyed after the hold committed: %d of %d left", n, creds)
	}
	if n := fe.count(t, `SELECT count(*) FROM keystore.subject_keys k JOIN subjects s ON s.id = k.subject_id WHERE s.external_id = $1`, sub); n != keys {
		t.Errorf("subject keys destroyed after the hold committed: %d of %d left", n, keys)
	}
	if n := fe.count(t, `SELECT count(*) FROM items i JOIN subjects s ON s.id = i.subject_id WHERE s.external_id = $1 AND i.status <> 'removed'`, sub); n != 2 {
		t.Errorf("items removed after the hold committed: %d of 2 left", n)
	}
	// The provider was already asked for the first item when the hold
	// committed; the second was never asked.
	if n := fe.liveAtProvider(t); n != 1 {
		t.Errorf("items live at the provider = %d, want 1 (the second was revoked after the hold)", n)
	}
	got, err := fe.comp.GetErasure(context.Background(), id)
	if err != nil || got.Status != compliance.ErasureApproved || got.LastError == "" {
		t.Errorf("request under the hold = %+v, %v; want approved with the reason", got, err)
	}
}

// Every write route answers 409 subject_erasing (the contract's error shape)
// while the run is stopped short, concurrently, and each is audited.
func TestEveryWriteOfASubjectBeingErasedIs409AndAudited(t *testing.T) {
	fe := startFence(t)
	const sub = "user_fenced"
	tok := userToken(t, sub)
	it := fe.linkSandbox(t, tok, "ins_sandbox")
	open := fe.newSession(t, tok, "")
	succeeded := fe.newSession(t, tok, "")
	pt := fe.sandboxPublicToken(t, tok, succeeded.ID, "ins_sandbox")
	status, _, body := fe.call(t, "POST", "/v1/accounts", tok,
		`{"account_number":"62001234567","routing_number":"011000015","account_type":"checking","holder_name":"A Person"}`)
	if status != 201 {
		t.Fatalf("manual account = %d %s", status, body)
	}
	acct := decode[accountBody](t, body)
	status, _, body = fe.call(t, "POST", "/v1/accounts/"+it.Accounts[0].ID+"/verifications", tok, `{"method":"micro_deposits"}`)
	if status != 201 {
		t.Fatalf("verification = %d %s", status, body)
	}
	ver := decode[struct{ ID string }](t, body)

	fe.gate.refuse.Store(true) // the run stops short at the provider: the fence stands
	_, status, got := fe.erase(t, sub)
	if status != 200 || got.Status != compliance.ErasureApproved {
		t.Fatalf("approve with the provider refusing = %d %+v", status, got)
	}
	writes := []struct{ what, method, path, body, key string }{
		{"new link session", "POST", "/v1/link/sessions", `{"products":["auth"]}`, ""},
		{"new link session, idempotent", "POST", "/v1/link/sessions", `{"products":["auth"]}`, "fence-key"},
		{"update-mode link session", "POST", "/v1/link/sessions", `{"products":["auth"],"item_id":"` + it.ID + `"}`, ""},
		{"sandbox link", "POST", "/v1/sandbox/public-token", `{"link_session_id":"` + open.ID + `","institution_id":"ins_sandbox","username":"user_good","password":"pass_good"}`, ""},
		{"exchange", "POST", "/v1/link/sessions/" + succeeded.ID + "/exchange", `{"public_token":"` + pt + `"}`, ""},
		{"manual account", "POST", "/v1/accounts", `{"account_number":"62009999999","routing_number":"011000015","account_type":"savings","holder_name":"A Person"}`, ""},
		{"start verification", "POST", "/v1/accounts/" + acct.ID + "/verifications", `{"method":"micro_deposits"}`, ""},
		{"confirm verification", "POST", "/v1/verifications/" + ver.ID + "/confirm", `{"amounts":[1,2]}`, ""},
		{"unlink", "DELETE", "/v1/items/" + it.ID, "", ""},
	}
	const rounds = 4
	var wg sync.WaitGroup
	answers := make([][]rawAnswer, rounds)
	for r := range answers {
		answers[r] = make([]rawAnswer, len(writes))
		for i, w := range writes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				key := ""
				if w.key != "" {
					key = fmt.Sprintf("%s-%d", w.key, r)
				}
				answers[r][i] = fe.send(w.method, w.path, tok, w.body, key)
			}()
		}
	}
	wg.Wait()
	for r := range answers {
		for i, w := range writes {
			mustErasing(t, w.what, answers[r][i])
		}
	}
	if n := fe.count(t, `SELECT count(*) FROM audit_entries WHERE action = 'subject.write_refused' AND outcome = 'denied' AND subject_pseudonym IS NOT NULL`); n != rounds*len(writes) {
		t.Errorf("refused writes audited = %d, want %d", n, rounds*len(writes))
	}
	// Reads still answer.
	if status, _, _ := fe.call(t, "GET", "/v1/items/"+it.ID, tok, ""); status != 200 {
		t.Errorf("a read during the erasure = %d", status)
	}
	// The provider's news of new accounts is acknowledged and ignored: no
	// new account (nor sealed number) for a subject being erased.
	before := len(it.Accounts)
	status, _, body = fe.call(t, "POST", "/v1/sandbox/items/"+it.ID+"/fire-webhook", tok, `{"code":"NEW_ACCOUNTS_AVAILABLE"}`)
	if status != 200 || !strings.Contains(body, `"ignored"`) {
		t.Errorf("a new-accounts webhook during the erasure = %d %s, want 200 ignored", status, body)
	}
	if n := fe.count(t, `SELECT count(*) FROM accounts WHERE item_id = $1`, it.ID); n != before {
		t.Errorf("accounts of the item = %d, want %d", n, before)
	}
}

// A provider that keeps refusing puts the run in needs_attention, naming
// the items, with nothing destroyed; after the erasure completes the same
// sub is a new subject that can link again.
func TestARefusingProviderLeadsToNeedsAttentionAndAReturningUserIsANewSubject(t *testing.T) {
	fe := startFence(t)
	const sub = "user_refused"
	tok := userToken(t, sub)
	it := fe.linkSandbox(t, tok, "ins_sandbox")
	oldID := ""
	if err := fe.DB.Pool.QueryRow(context.Background(), `SELECT id FROM subjects WHERE external_id = $1`, sub).Scan(&oldID); err != nil {
		t.Fatal(err)
	}
	fe.gate.refuse.Store(true)
	id, status, got := fe.erase(t, sub) // attempt 1 of 2
	if status != 200 || got.Status != compliance.ErasureApproved {
		t.Fatalf("first attempt = %d %+v", status, got)
	}
	if _, err := fe.comp.ResumeErasures(context.Background()); err == nil {
		t.Fatal("resume with the provider refusing succeeded")
	}
	status, body := fe.approve(t, id) // a needs_attention request is tried again on approval
	got = decode[erasureBody](t, body)
	if status != 200 || got.Status != compliance.ErasureNeedsAttention {
		t.Fatalf("after the attempts = %d %s, want needs_attention", status, body)
	}
	var named struct {
		UnrevokedItems []compliance.UnrevokedItem `json:"unrevoked_items"`
	}
	if err := json.Unmarshal([]byte(body), &named); err != nil || len(named.UnrevokedItems) != 1 || named.UnrevokedItems[0].ItemID != it.ID {
		t.Fatalf("unrevoked items = %+v, want %s", named.UnrevokedItems, it.ID)
	}
	if n := fe.count(t, `SELECT count(*) FROM audit_entries WHERE action = 'erasure.needs_attention'`); n != 1 {
		t.Errorf("needs_attention audited %d times", n)
	}
	if n := fe.count(t, `SELECT count(*) FROM keystore.subject_keys WHERE subject_id = $1`, oldID); n == 0 {
		t.Fatal("keys destroyed while an item is live at the provider")
	}
	mustErasing(t, "a link session while needs_attention", fe.send("POST", "/v1/link/sessions", tok, `{"products":["auth"]}`, ""))

	// The provider relents; approving again completes it.
	fe.gate.refuse.Store(false)
	status, body = fe.approve(t, id)
	if got = decode[erasureBody](t, body); status != 200 || got.Status != compliance.ErasureCompleted || got.Receipt.ProviderItemsRevoked != 1 {
		t.Fatalf("approve after the provider relented = %d %s", status, body)
	}
	if n := fe.liveAtProvider(t); n != 0 {
		t.Errorf("%d items live at the provider", n)
	}
	// The fence ended with the run: the same sub is a new subject.
	again := fe.linkSandbox(t, tok, "ins_sandbox")
	var newID string
	if err := fe.DB.Pool.QueryRow(context.Background(), `SELECT id FROM subjects WHERE external_id = $1`, sub).Scan(&newID); err != nil {
		t.Fatal(err)
	}
	if newID == oldID {
		t.Error("the returning user is the erased subject")
	}
	status, _, body = fe.call(t, "GET", "/v1/items", tok, "")
	if status != 200 || !strings.Contains(body, again.ID) || strings.Contains(body, it.ID) {
		t.Errorf("the returning user's items = %d %s", status, body)
	}
}
