package banklink_test

import (
	"context"
	"crypto/rand"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/sandbox"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault/vaulttest"
	"github.com/kluis-dev/kluis/verification"
)

// clock is a test clock that only moves when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// env is bank linking over a real database (the serving role, as kluis
// runs), a working vault and the sandbox provider: no HTTP.
type env struct {
	db    *postgres.DB
	vault vaulttest.Vault
	svc   *banklink.Service
	sb    *sandbox.Provider
	clock *clock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db, _ := pgtest.Open(t)
	v := vaulttest.OpenWithKeys(t, db, slices.Concat(banklink.SystemKeys(), verification.SystemKeys()),
		slices.Concat(banklink.CredentialKinds(), verification.CredentialKinds())...)
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	c := &clock{now: time.Now().UTC().Truncate(time.Second)}
	sb, err := sandbox.New(sandbox.Options{DB: db, Secret: secret, Clock: c})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := banklink.New(banklink.Options{DB: db, Vault: v.Store, Auditor: audit.NewAuditor(db, v.System, nil),
		Provider: sb, Keys: v.System, Clock: c})
	if err != nil {
		t.Fatal(err)
	}
	return &env{db: db, vault: v, svc: svc, sb: sb, clock: c}
}

var goodLogin = banklink.SandboxLink{InstitutionID: sandbox.InstitutionAuth, Username: sandbox.GoodUsername, Password: sandbox.GoodPassword}

// succeeded runs a new link session to its public token: session, the
// user's login.
func (e *env) succeeded(t *testing.T, actor audit.Actor) (banklink.LinkSession, string) {
	t.Helper()
	ctx := context.Background()
	ls, err := e.svc.CreateLinkSession(ctx, actor, nil, "", "")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := e.svc.SandboxPublicToken(ctx, actor, ls.ID, goodLogin)
	if err != nil {
		t.Fatal(err)
	}
	return ls, tok
}

// link runs a new link to its item: session, the user's login, exchange.
func (e *env) link(t *testing.T, actor audit.Actor) banklink.Item {
	t.Helper()
	ls, tok := e.succeeded(t, actor)
	it, created, err := e.svc.Exchange(context.Background(), actor, ls.ID, tok)
	if err != nil || !created {
		t.Fatalf("exchange: created %v, %v", created, err)
	}
	return it
}

// status reads a row's status as stored.
func (e *env) status(t *testing.T, table, id string) string {
	t.Helper()
	var st string
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT status FROM `+table+` WHERE id = $1`, id).Scan(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// webhook fires the sandbox's signed webhook about the item through the
// service, as POST /webhooks/sandbox would.
func (e *env) webhook(t *testing.T, it banklink.Item, code string) (body []byte, res banklink.WebhookResult) {
	t.Helper()
	ctx := context.Background()
	header, body, err := e.sb.SignedWebhook(ctx, banklink.SandboxWebhook{ProviderItemID: it.ProviderItemID, Code: code})
	if err != nil {
		t.Fatal(err)
	}
	if res, err = e.svc.HandleWebhook(ctx, sandbox.Name, header, body, "req_webhook"); err != nil {
		t.Fatalf("webhook %s: %v", code, err)
	}
	return body, res
}

func TestALinkGoesFromSessionToItemToAccountsAndIsRemovedWithItsCredentials(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	actor := audit.User("user_bl_link", "req_1")
	ls, err := e.svc.CreateLinkSession(ctx, actor, nil, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if ls.Status != banklink.SessionCreated || ls.LinkToken == "" {
		t.Fatalf("session = %+v", ls)
	}
	// A public token the provider refuses sends the session back to
	// created, open for the user's real one.
	if _, _, err := e.svc.Exchange(ctx, actor, ls.ID, "public-sandbox-bogus"); kluis.ErrorCode(err) != banklink.CodeInvalidToken {
		t.Fatalf("a refused token: %v", err)
	}
	if got := e.status(t, "link_sessions", ls.ID); got != banklink.SessionCreated {
		t.Fatalf("after a refused token the session is %s", got)
	}
	tok, err := e.svc.SandboxPublicToken(ctx, actor, ls.ID, goodLogin)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.status(t, "link_sessions", ls.ID); got != banklink.SessionSucceeded {
		t.Fatalf("after the login the session is %s", got)
	}
	it, created, err := e.svc.Exchange(ctx, actor, ls.ID, tok)
	if err != nil || !created {
		t.Fatalf("exchange: %v, %v", created, err)
	}
	if it.Status != banklink.ItemActive || it.Provider != sandbox.Name || len(it.Accounts) == 0 {
		t.Fatalf("item = %+v", it)
	}
	// The same token again answers the same item and makes no other.
	again, created, err := e.svc.Exchange(ctx, actor, ls.ID, tok)
	if err != nil || created || again.ID != it.ID {
		t.Fatalf("exchange again: %s, %v, %v", again.ID, created, err)
	}
	if got := e.status(t, "link_sessions", ls.ID); got != banklink.SessionExchanged {
		t.Fatalf("after the exchange the session is %s", got)
	}
	items, _, err := e.svc.Items(ctx, actor.Name, banklink.Page{})
	if err != nil || len(items) != 1 {
		t.Fatalf("items = %d, %v", len(items), err)
	}
	accts, _, err := e.svc.Accounts(ctx, actor.Name, banklink.Page{})
	if err != nil || len(accts) != len(it.Accounts) {
		t.Fatalf("accounts = %d, %v", len(accts), err)
	}
	acct := accts[0]
	if acct.ItemID != it.ID || acct.VerificationStatus != banklink.VerificationUnverified || acct.AccountNumberRef == "" {
		t.Fatalf("account = %+v", acct)
	}
	// Another user sees none of it.
	other := audit.User("user_bl_other", "req_2")
	if _, err := e.svc.Item(ctx, other.Name, it.ID); kluis.ErrorCode(err) != kluis.ENotFound {
		t.Fatalf("another user's read: %v", err)
	}
	if _, err := e.svc.DeleteItem(ctx, other, it.ID); kluis.ErrorCode(err) != kluis.ENotFound {
		t.Fatalf("another user's delete: %v", err)
	}

	revoked, err := e.svc.DeleteItem(ctx, actor, it.ID)
	if err != nil || !revoked {
		t.Fatalf("delete: %v, %v", revoked, err)
	}
	if got := e.status(t, "items", it.ID); got != banklink.ItemRemoved {
		t.Fatalf("after delete the item is %s", got)
	}
	if items, _, _ := e.svc.Items(ctx, actor.Name, banklink.Page{}); len(items) != 0 {
		t.Fatalf("a removed item is listed: %d", len(items))
	}
	if accts, _, _ := e.svc.Accounts(ctx, actor.Name, banklink.Page{}); len(accts) != 0 {
		t.Fatalf("a removed item's accounts are listed: %d", len(accts))
	}
	// The access token and the account numbers are destroyed.
	for _, ref := range []string{it.CredentialRef, acct.AccountNumberRef} {
		if _, err := e.vault.Store.Open(ctx, ref); err == nil {
			t.Fatalf("credential %s still opens after removal", ref)
		}
	}
	if _, err := e.svc.DeleteItem(ctx, actor, it.ID); kluis.ErrorCode(err) != kluis.ENotFound {
		t.Fatalf("delete again: %v", err)
	}
}

func TestAnOpenLinkSessionExpiresAtItsDeadlineAndTakesNoToken(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	actor := audit.User("user_bl_expiry", "req_1")
	ls, err := e.svc.CreateLinkSession(ctx, actor, nil, "", "")
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Add(banklink.NewSessionTTL + time.Minute)
	n, err := e.svc.ExpireLinkSessions(ctx, 10)
	if err != nil || n != 1 {
		t.Fatalf("expired %d, %v", n, err)
	}
	if got := e.status(t, "link_sessions", ls.ID); got != banklink.SessionExpired {
		t.Fatalf("session is %s", got)
	}
	if n, err := e.svc.ExpireLinkSessions(ctx, 10); err != nil || n != 0 {
		t.Fatalf("expired again %d, %v", n, err)
	}
	if _, err := e.svc.SandboxPublicToken(ctx, actor, ls.ID, goodLogin); kluis.ErrorCode(err) != banklink.CodeLinkSessionClosed {
		t.Fatalf("a login on an expired session: %v", err)
	}
}

// Webhooks go through the service as the provider delivers them: each
// applied once however often (and however concurrently) it arrives, each
// change a transition the item's status allows, and update mode repairs
// the login.
func TestWebhooksApplyOnceAndUpdateModeRepairsTheLogin(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	actor := audit.User("user_bl_webhooks", "req_1")
	it := e.link(t, actor)

	header, body, err := e.sb.SignedWebhook(ctx, banklink.SandboxWebhook{ProviderItemID: it.ProviderItemID, Code: "ERROR"})
	if err != nil {
		t.Fatal(err)
	}
	const deliveries = 8
	results := make([]banklink.WebhookResult, deliveries)
	errs := make([]error, deliveries)
	var wg sync.WaitGroup
	for i := range deliveries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.svc.HandleWebhook(ctx, sandbox.Name, header.Clone(), body, "req_concurrent")
		}()
	}
	wg.Wait()
	applied := 0
	for i, res := range results {
		if errs[i] != nil {
			t.Fatalf("delivery %d: %v", i, errs[i])
		}
		switch {
		case res.Duplicate:
		case res.Outcome == banklink.WebhookApplied:
			applied++
		default:
			t.Fatalf("delivery %d = %+v", i, res)
		}
	}
	if applied != 1 {
		t.Fatalf("the webhook applied %d times", applied)
	}
	if got := e.status(t, "items", it.ID); got != banklink.ItemLoginRequired {
		t.Fatalf("item is %s", got)
	}
	// A second event of the same kind (ITEM ERROR, ITEM_LOGIN_REQUIRED by
	// default) is recorded but changes nothing.
	if _, res := e.webhook(t, it, "ERROR"); res.Duplicate || res.Outcome != banklink.WebhookNoChange {
		t.Fatalf("a second login_required = %+v", res)
	}

	// Update mode: the user logs in again and the exchange repairs the item.
	ls, err := e.svc.CreateLinkSession(ctx, actor, nil, it.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if ls.Mode != banklink.ModeUpdate || ls.ItemID != it.ID {
		t.Fatalf("update session = %+v", ls)
	}
	tok, err := e.svc.SandboxPublicToken(ctx, actor, ls.ID, banklink.SandboxLink{Username: sandbox.GoodUsername, Password: sandbox.GoodPassword})
	if err != nil {
		t.Fatal(err)
	}
	repaired, _, err := e.svc.Exchange(ctx, actor, ls.ID, tok)
	if err != nil || repaired.ID != it.ID || repaired.Status != banklink.ItemActive {
		t.Fatalf("update exchange: %+v, %v", repaired, err)
	}

	// Consent withdrawn at the provider: the item and its accounts are
	// revoked, once.
	if _, res := e.webhook(t, it, "USER_PERMISSION_REVOKED"); res.Outcome != banklink.WebhookApplied {
		t.Fatalf("revoked = %+v", res)
	}
	if got := e.status(t, "items", it.ID); got != banklink.ItemRevoked {
		t.Fatalf("item is %s", got)
	}
	for _, a := range it.Accounts {
		if got := e.status(t, "accounts", a.ID); got != banklink.AccountRevoked {
			t.Fatalf("account %s is %s", a.ID, got)
		}
	}
	// A login webhook cannot bring a revoked item back.
	if _, res := e.webhook(t, it, "ERROR"); res.Outcome == banklink.WebhookApplied {
		t.Fatalf("a revoked item took login_required: %+v", res)
	}
	if got := e.status(t, "items", it.ID); got != banklink.ItemRevoked {
		t.Fatalf("item is %s", got)
	}
	// Update mode is refused for it; removal still works.
	if _, err := e.svc.CreateLinkSession(ctx, actor, nil, it.ID, ""); kluis.ErrorCode(err) != kluis.EConflict {
		t.Fatalf("update mode on a revoked item: %v", err)
	}
	if _, err := e.svc.DeleteItem(ctx, actor, it.ID); err != nil {
		t.Fatal(err)
	}
	if got := e.status(t, "items", it.ID); got != banklink.ItemRemoved {
		t.Fatalf("item is %s", got)
	}
}
