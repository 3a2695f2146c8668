package api_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/ratelimit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/accountnumber"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
)

// ownerOf is a fresh owner of the type that kind belongs to, for
// credentials sealed straight into the store.
func ownerOf(kind string) vault.Owner {
	if kind == accountnumber.Kind {
		return vault.AccountOwner(kluis.NewID(kluis.PrefixAccount))
	}
	return vault.ItemOwner(kluis.NewID(kluis.PrefixItem))
}

// revealAnswer is a reveal's body: a secret, or an error.
type revealAnswer struct {
	Ref   string `json:"ref"`
	Kind  string `json:"kind"`
	Owner struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	} `json:"owner"`
	Secret map[string]string `json:"secret"`
	Error  struct {
		Code    string `json:"code"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"error"`
}

// revealAt posts a reveal to path (…/credentials/{ref}/reveal,
// …/accounts/{id}/reveal or …/items/{id}/reveal) as service.
func (be *bankEnv) revealAt(t *testing.T, service, path string) (int, revealAnswer, string) {
	t.Helper()
	status, h, body := apitest.Do(t, be.ServiceClient(t, service), "POST", be.Internal.URL+"/internal/v1/"+path+"/reveal",
		"", "application/json", `{"purpose":"payment_initiation"}`)
	var out revealAnswer
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("reveal %s = %d %s", path, status, body)
	}
	if h.Get("Cache-Control") != "no-store" {
		t.Fatalf("reveal %s: Cache-Control %q", path, h.Get("Cache-Control"))
	}
	return status, out, body
}

// linkedAccount links a sandbox item for sub and returns the item and its
// first account with its number's ref.
func (be *bankEnv) linkedAccount(t *testing.T, sub string) (itemBody, string, string) {
	t.Helper()
	it := be.linkSandbox(t, userToken(t, sub), "ins_sandbox")
	status, internal := be.internalItem(t, it.ID)
	if status != 200 || len(internal.Accounts) == 0 || internal.Accounts[0].AccountNumberRef == nil {
		t.Fatalf("internal item = %d %+v", status, internal)
	}
	return it, internal.Accounts[0].ID, *internal.Accounts[0].AccountNumberRef
}

// asTableOwner runs sql as the table's owner (the role that migrated), with
// the trigger that keeps credentials' owners fixed switched off, as only the
// owner could: the serving role cannot rename an owner at all.
func (be *bankEnv) asTableOwner(t *testing.T, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	err := pgtest.OpenOwner(t, be.DBURL).InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `ALTER TABLE credentials DISABLE TRIGGER credentials_owner_fixed`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, sql, args...); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `ALTER TABLE credentials ENABLE TRIGGER credentials_owner_fixed`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (be *bankEnv) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := be.DB.Pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatal(err)
	}
}

// integrityFailures reads kluis_reveal_integrity_failures_total for route.
func (be *bankEnv) integrityFailures(t *testing.T, route string) string {
	t.Helper()
	status, _, body := apitest.Do(t, be.ServiceClient(t, "payments"), "GET", be.Internal.URL+"/metrics", "", "", "")
	if status != 200 {
		t.Fatalf("metrics = %d", status)
	}
	m := regexp.MustCompile(`(?m)^kluis_reveal_integrity_failures_total\{route="` + route + `"\} (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no kluis_reveal_integrity_failures_total for route %s", route)
	}
	return m[1]
}

// wantIntegrity checks the contract's answer to a pointer and a credential
// that disagree: 500, code internal, reason integrity, a message that says
// nothing more, and no secret.
func wantIntegrity(t *testing.T, status int, a revealAnswer, body string, secrets ...string) {
	t.Helper()
	if status != 500 || a.Error.Code != "internal" || a.Error.Reason != "integrity" || a.Error.Message != "internal error" {
		t.Fatalf("answer = %d %s, want 500 internal/integrity", status, body)
	}
	for _, s := range secrets {
		if strings.Contains(body, s) {
			t.Fatalf("the refusal carries a secret: %s", body)
		}
	}
}

func TestRevealByAccountAndByItemNamesTheOwner(t *testing.T) {
	be := startBank(t, false)
	it, accountID, numberRef := be.linkedAccount(t, "user_owner_1")
	_, internal := be.internalItem(t, it.ID)

	status, a, body := be.revealAt(t, "payments", "accounts/"+accountID)
	if status != 200 || a.Ref != numberRef || a.Kind != accountnumber.Kind || a.Owner.Type != "account" ||
		a.Owner.ID != accountID || a.Secret["account_number"] == "" {
		t.Fatalf("account reveal = %d %s", status, body)
	}
	number := a.Secret["account_number"]
	status, a, body = be.revealAt(t, "payments", "items/"+it.ID)
	if status != 200 || a.Ref != internal.CredentialRef || a.Kind != banklink.KindAccessToken || a.Owner.Type != "item" ||
		a.Owner.ID != it.ID || a.Secret["access_token"] == "" {
		t.Fatalf("item reveal = %d %s", status, body)
	}
	status, a, body = be.revealAt(t, "payments", "credentials/"+numberRef)
	if status != 200 || a.Owner.Type != "account" || a.Owner.ID != accountID || a.Secret["account_number"] != number {
		t.Fatalf("credential reveal = %d %s", status, body)
	}
	if n := auditCount(t, be.Env, `action = 'credential.reveal' AND outcome = 'success' AND target = $1
		AND details->>'via' = 'account' AND details->>'owner' = $2 AND details->>'kind' = 'account_number'`,
		numberRef, "account/"+accountID); n != 1 {
		t.Fatalf("%d audit entries for the account reveal, want 1", n)
	}

	// The same policy as the credential route: reporting may reveal account
	// numbers for statements only, never an item's token.
	status, _, body = apitest.Do(t, be.ServiceClient(t, "reporting"), "POST", be.Internal.URL+"/internal/v1/items/"+it.ID+"/reveal",
		"", "application/json", `{"purpose":"statement"}`)
	mustError(t, status, body, 403, "forbidden")
	status, _, body = apitest.Do(t, be.ServiceClient(t, "reporting"), "POST", be.Internal.URL+"/internal/v1/accounts/"+accountID+"/reveal",
		"", "application/json", `{"purpose":"statement"}`)
	if status != 200 || !strings.Contains(body, number) {
		t.Fatalf("reporting's statement reveal = %d %s", status, body)
	}
	if n := auditCount(t, be.Env, `action = 'credential.reveal' AND outcome = 'denied' AND actor = 'reporting'
		AND details->>'via' = 'item' AND details->>'owner' = $1`, "item/"+it.ID); n != 1 {
		t.Fatalf("%d audit entries for the refused item reveal, want 1", n)
	}
	// Unknown and malformed owners are 404, like an unknown ref.
	for _, path := range []string{"accounts/" + kluis.NewID(kluis.PrefixAccount), "items/" + kluis.NewID(kluis.PrefixItem),
		"accounts/" + it.ID, "items/" + accountID, "accounts/nope"} {
		status, _, body := apitest.Do(t, be.ServiceClient(t, "payments"), "POST", be.Internal.URL+"/internal/v1/"+path+"/reveal",
			"", "application/json", `{"purpose":"payment_initiation"}`)
		mustError(t, status, body, 404, "not_found")
	}
}

func TestTheThreeRevealRoutesShareOneRateLimit(t *testing.T) {
	be := startBank(t, false, withLimits(api.RateLimits{Operations: map[string]ratelimit.Limit{api.OpReveal: perMinute(2)}}))
	it, accountID, numberRef := be.linkedAccount(t, "user_owner_limit")
	if status, _, body := be.revealAt(t, "payments", "accounts/"+accountID); status != 200 {
		t.Fatalf("first reveal = %d %s", status, body)
	}
	if status, _, body := be.revealAt(t, "payments", "items/"+it.ID); status != 200 {
		t.Fatalf("second reveal = %d %s", status, body)
	}
	status, _, body := apitest.Do(t, be.ServiceClient(t, "payments"), "POST", revealURL(be.Env, numberRef), "", "application/json", `{"purpose":"payment_initiation"}`)
	mustError(t, status, body, 429, "rate_limited")
}

func TestAnOwnerRevealWithAnIdempotencyKeyStoresNoSecret(t *testing.T) {
	be := startBank(t, false)
	_, accountID, _ := be.linkedAccount(t, "user_owner_idem")
	do := func(purpose string) (int, string) {
		req, err := http.NewRequest(http.MethodPost, be.Internal.URL+"/internal/v1/accounts/"+accountID+"/reveal",
			strings.NewReader(`{"purpose":"`+purpose+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "owner-reveal-1")
		resp, err := be.ServiceClient(t, "payments").Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for range 2 {
		if status, body := do("payment_initiation"); status != 200 || !strings.Contains(body, `"account_number"`) {
			t.Fatalf("reveal with a key = %d %s", status, body)
		}
	}
	status, body := do("balance_check")
	mustError(t, status, body, 422, "idempotency_key_reused")
	var stored int
	if err := be.DB.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM idempotency_keys WHERE length(response_body) > 80`).Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("stored owner-reveal answers with a body = %d (%v), want none", stored, err)
	}
}

// Break 5 of issue 10: with row-level write access, account A's
// account_number_ref is pointed at B's credential. A reveal of A never
// yields B's number: the account route answers 500 integrity (audited,
// counted); the ref route names owner B, so the service can notice.
func TestAPointerToAnotherAccountsCredentialNeverRevealsItAsTheirs(t *testing.T) {
	be := startBank(t, false)
	_, accountA, refA := be.linkedAccount(t, "user_victim_a")
	_, accountB, refB := be.linkedAccount(t, "user_victim_b")
	_, b, _ := be.revealAt(t, "payments", "accounts/"+accountB)
	numberB := b.Secret["account_number"]

	be.exec(t, `UPDATE accounts SET account_number_ref = $1 WHERE id = $2`, refB, accountA)

	status, a, body := be.revealAt(t, "payments", "accounts/"+accountA)
	wantIntegrity(t, status, a, body, numberB)
	if got := be.integrityFailures(t, "account"); got != "1" {
		t.Fatalf("integrity failures on the account route = %s, want 1", got)
	}
	if n := auditCount(t, be.Env, `action = 'credential.reveal' AND outcome = 'failure' AND details->>'reason' = 'integrity'
		AND target = $1 AND details->>'credential_ref' = $1 AND details->>'owner' = $2 AND details->>'credential_owner' = $3`,
		refB, "account/"+accountA, "account/"+accountB); n != 1 {
		t.Fatalf("%d integrity audit entries naming the refs, want 1", n)
	}
	if n := auditCount(t, be.Env, `details::text LIKE '%' || $1 || '%'`, numberB); n != 0 {
		t.Fatal("an audit entry holds the account number")
	}

	// The service that reads A's pointer and reveals by ref is told whose
	// number it got.
	status, body2 := func() (int, string) {
		s, _, b := apitest.Do(t, be.ServiceClient(t, "payments"), "GET", be.Internal.URL+"/internal/v1/accounts/"+accountA, "", "", "")
		return s, b
	}()
	if status != 200 || !strings.Contains(body2, refB) {
		t.Fatalf("internal account A = %d %s", status, body2)
	}
	status, a, body = be.revealAt(t, "payments", "credentials/"+refB)
	if status != 200 || a.Owner.Type != "account" || a.Owner.ID != accountB {
		t.Fatalf("reveal by A's pointer = %d %s, want owner B named", status, body)
	}
	if a.Owner.ID == accountA {
		t.Fatal("B's number was named as A's")
	}

	// Nothing of A was lost: set right, A reveals its own number again.
	be.exec(t, `UPDATE accounts SET account_number_ref = $1 WHERE id = $2`, refA, accountA)
	if status, a, body := be.revealAt(t, "payments", "accounts/"+accountA); status != 200 || a.Owner.ID != accountA || a.Secret["account_number"] == numberB {
		t.Fatalf("A after repair = %d %s", status, body)
	}
}

func TestAPointerToAnotherItemsTokenIsRefusedOnRevealAndAtTheProvider(t *testing.T) {
	be := startBank(t, false)
	itA, _, _ := be.linkedAccount(t, "user_item_a")
	itB, _, _ := be.linkedAccount(t, "user_item_b")
	_, internalB := be.internalItem(t, itB.ID)
	_, b, _ := be.revealAt(t, "payments", "items/"+itB.ID)
	be.exec(t, `UPDATE items SET credential_ref = $1 WHERE id = $2`, internalB.CredentialRef, itA.ID)

	status, a, body := be.revealAt(t, "payments", "items/"+itA.ID)
	wantIntegrity(t, status, a, body, b.Secret["access_token"])
	if got := be.integrityFailures(t, "item"); got != "1" {
		t.Fatalf("integrity failures on the item route = %s, want 1", got)
	}
	// Unlinking A must not revoke B's access at the provider with B's token.
	status, _, body = be.call(t, "DELETE", "/v1/items/"+itA.ID, userToken(t, "user_item_a"), "")
	if status < 500 {
		t.Fatalf("unlinking A through a pointer to B's token = %d %s, want a refusal", status, body)
	}
	if status, a, body := be.revealAt(t, "payments", "items/"+itB.ID); status != 200 || a.Secret["access_token"] != b.Secret["access_token"] {
		t.Fatalf("B after A's unlink attempt = %d %s", status, body)
	}
}

func TestACiphertextMovedOrAnOwnerColumnEditedFailsToOpen(t *testing.T) {
	be := startBank(t, false)
	_, accountA, refA := be.linkedAccount(t, "user_move_a")
	_, accountB, refB := be.linkedAccount(t, "user_move_b")
	_, b, _ := be.revealAt(t, "payments", "accounts/"+accountB)

	// B's ciphertext copied into A's row.
	be.exec(t, `UPDATE credentials a SET envelope = b.envelope FROM credentials b WHERE a.ref = $1 AND b.ref = $2`, refA, refB)
	status, a, body := be.revealAt(t, "payments", "accounts/"+accountA)
	wantIntegrity(t, status, a, body, b.Secret["account_number"])
	status, a, body = be.revealAt(t, "payments", "credentials/"+refA)
	wantIntegrity(t, status, a, body, b.Secret["account_number"])
	if got := be.integrityFailures(t, "credential"); got != "1" {
		t.Fatalf("integrity failures on the credential route = %s, want 1", got)
	}

	// B's credential handed to A by its owner column, and A pointed at it.
	// The serving role cannot rename an owner at all; the table's owner can.
	if _, err := be.DB.Pool.Exec(context.Background(), `UPDATE credentials SET owner_id = $1 WHERE ref = $2`, accountA, refB); err == nil {
		t.Fatal("a credential's owner was renamed")
	}
	be.asTableOwner(t, `UPDATE credentials SET owner_id = $1 WHERE ref = $2`, accountA, refB)
	be.exec(t, `UPDATE accounts SET account_number_ref = $1 WHERE id = $2`, refB, accountA)
	status, a, body = be.revealAt(t, "payments", "accounts/"+accountA)
	wantIntegrity(t, status, a, body, b.Secret["account_number"])
	status, a, body = be.revealAt(t, "payments", "credentials/"+refB)
	wantIntegrity(t, status, a, body, b.Secret["account_number"])
}

// toVersion1 rewrites ref's record as envelope format version 1, as kluis
// sealed records before owners were bound, written here from
// docs/ENVELOPE.md alone (the keyring key unwrapped through the provider,
// the subject key from its local wrap).
func toVersion1(t *testing.T, env *apitest.Env, ref string) {
	t.Helper()
	ctx := context.Background()
	var subject, kind, rootVersion string
	var version, epoch uint32
	var wrapped, keyringWrapped []byte
	if err := env.DB.Pool.QueryRow(ctx, `
		SELECT c.subject_id, c.kind, c.key_version, k.wrapped, k.keyring_epoch, r.wrapped, r.root_version
		FROM credentials c JOIN keystore.subject_keys k ON k.subject_id = c.subject_id AND k.version = c.key_version
		JOIN keystore.keyring_keys r ON r.epoch = k.keyring_epoch
		WHERE c.ref = $1`, ref).Scan(&subject, &kind, &version, &wrapped, &epoch, &keyringWrapped, &rootVersion); err != nil {
		t.Fatal(err)
	}
	// The keyring key through the provider, then the subject key's local
	// wrap ("Key hierarchy").
	keyringKey, err := env.Keys.Unwrap(ctx, fmt.Sprintf("keyring/v%d", epoch), vault.WrappedKey{Ciphertext: keyringWrapped, RootVersion: rootVersion})
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(keyringKey)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	lp16 := func(b []byte, s string) []byte { return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...) }
	wrapAAD := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(lp16(lp16(nil, "kluis/keyring/subject-key/v1"), subject), version), epoch)
	if len(wrapped) != 1+12+32+16 || wrapped[0] != 1 {
		t.Fatalf("a wrapped subject key of %d bytes", len(wrapped))
	}
	key, err := gcm.Open(nil, wrapped[1:13], wrapped[13:], wrapAAD)
	if err != nil {
		t.Fatal(err)
	}
	c, err := env.Store.Open(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Zero()
	lp := func(b []byte, s string) []byte { return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...) }
	aad := binary.BigEndian.AppendUint32([]byte{1}, version)
	for _, f := range []string{"kluis/vault/credential", subject, ref, kind} {
		aad = lp(aad, f)
	}
	if block, err = aes.NewCipher(key); err != nil {
		t.Fatal(err)
	}
	if gcm, err = cipher.NewGCM(block); err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 12)
	_, _ = rand.Read(nonce)
	out := append(binary.BigEndian.AppendUint32([]byte{1}, version), nonce...)
	out = gcm.Seal(out, nonce, c.Secret, aad)
	if _, err := env.DB.Pool.Exec(ctx, `UPDATE credentials SET envelope = $1 WHERE ref = $2`, out, ref); err != nil {
		t.Fatal(err)
	}
}

func envelopeVersion(t *testing.T, env *apitest.Env, ref string) int {
	t.Helper()
	var v int
	if err := env.DB.Pool.QueryRow(context.Background(), `SELECT get_byte(envelope, 0) FROM credentials WHERE ref = $1`, ref).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestAVersion1RecordWhoseOwnerColumnWasEditedIsCaughtByThePointers(t *testing.T) {
	be := startBank(t, false)
	_, accountA, _ := be.linkedAccount(t, "user_v1_a")
	_, accountB, refB := be.linkedAccount(t, "user_v1_b")
	_, b, _ := be.revealAt(t, "payments", "accounts/"+accountB)
	toVersion1(t, be.Env, refB)
	// Before the re-seal, the version-1 record reveals with its owner.
	if status, a, body := be.revealAt(t, "payments", "accounts/"+accountB); status != 200 || a.Owner.ID != accountB ||
		a.Secret["account_number"] != b.Secret["account_number"] {
		t.Fatalf("a version-1 record before re-seal = %d %s", status, body)
	}
	// Its AAD binds no owner: a writer who owns the table renames the owner
	// to A and points A at it. B's own pointer still names it, so the two
	// disagree.
	be.asTableOwner(t, `UPDATE credentials SET owner_id = $1 WHERE ref = $2`, accountA, refB)
	be.exec(t, `UPDATE accounts SET account_number_ref = $1 WHERE id = $2`, refB, accountA)
	status, a, body := be.revealAt(t, "payments", "accounts/"+accountA)
	wantIntegrity(t, status, a, body, b.Secret["account_number"])
	status, a, body = be.revealAt(t, "payments", "credentials/"+refB)
	wantIntegrity(t, status, a, body, b.Secret["account_number"])
	// And the re-seal refuses to make that owner authentic.
	res, err := be.Store.Rotate(context.Background(), be.DB, vault.RotationOptions{Owners: be.svc})
	if kluis.ErrorCode(err) != vault.EIntegrity || res.ResealFailed != 1 {
		t.Fatalf("rotation = %+v %v, want the disputed subject refused", res, err)
	}
	if envelopeVersion(t, be.Env, refB) != 1 {
		t.Fatal("the disputed record was re-sealed")
	}
}

func TestVersion1RecordsRevealWhileTheRotationResealsThemAsVersion2(t *testing.T) {
	be := startBank(t, false)
	type owned struct{ path, ref, owner, secret string }
	var all []owned
	for i := range 4 {
		it, accountID, numberRef := be.linkedAccount(t, fmt.Sprintf("user_reseal_%d", i))
		_, internal := be.internalItem(t, it.ID)
		for _, o := range []owned{{"accounts/" + accountID, numberRef, accountID, ""}, {"items/" + it.ID, internal.CredentialRef, it.ID, ""}} {
			_, a, _ := be.revealAt(t, "payments", o.path)
			o.secret = a.Secret["account_number"] + a.Secret["access_token"]
			toVersion1(t, be.Env, o.ref)
			all = append(all, o)
		}
	}
	var records int // every record of a subject that holds a version-1 one is re-sealed
	if err := be.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM credentials`).Scan(&records); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var reveals, failures atomic.Int64
	for g := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := be.ServiceClient(t, "payments")
			for i := g; ctx.Err() == nil; i++ {
				o := all[i%len(all)]
				path := o.path
				if i%3 == 0 {
					path = "credentials/" + o.ref
				}
				status, _, body := apitest.Do(t, client, "POST", be.Internal.URL+"/internal/v1/"+path+"/reveal", "", "application/json", `{"purpose":"payment_initiation"}`)
				reveals.Add(1)
				var a revealAnswer
				_ = json.Unmarshal([]byte(body), &a)
				if status != 200 || a.Owner.ID != o.owner || a.Secret["account_number"]+a.Secret["access_token"] != o.secret {
					failures.Add(1)
					t.Errorf("reveal of %s during the re-seal = %d %s", path, status, body)
					return
				}
			}
		}()
	}
	for reveals.Load() < 40 { // let the reveals get going first
		time.Sleep(5 * time.Millisecond)
	}
	res, err := be.Store.Rotate(context.Background(), be.DB, vault.RotationOptions{Owners: be.svc})
	for n := reveals.Load(); reveals.Load() < n+40; { // and keep going after it
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	wg.Wait()
	if err != nil || res.ResealedSubjects != 4 || res.ResealedRecords != records {
		t.Fatalf("rotation = %+v %v, want 4 subjects and %d records", res, err, records)
	}
	if failures.Load() != 0 {
		t.Fatalf("%d of %d reveals failed during the re-seal", failures.Load(), reveals.Load())
	}
	for _, o := range all {
		if v := envelopeVersion(t, be.Env, o.ref); v != 2 {
			t.Fatalf("%s is still version %d", o.ref, v)
		}
	}
}
