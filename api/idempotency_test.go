package api_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
)

// thingsEnv starts the listeners with the test-only POST /v1/test/things.
func thingsEnv(t *testing.T) (*apitest.Env, *api.Things) {
	t.Helper()
	var things *api.Things
	env := apitest.Start(t, func(d *api.Deps) { things = api.WithThings(d) })
	return env, things
}

type idemAnswer struct {
	status int
	header http.Header
	body   string
}

// idemPost sends a POST with an Idempotency-Key (none if key is "-").
func idemPost(t *testing.T, url, token, key, body string) idemAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return idemAnswer{}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	if key != "-" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return idemAnswer{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return idemAnswer{resp.StatusCode, resp.Header, string(b)}
}

func TestTwentyConcurrentPostsWithOneKeyCreateOneResource(t *testing.T) {
	env, things := thingsEnv(t)
	url, alice := env.Public.URL+"/v1/test/things", jwttest.Token(t, jwttest.WithSubject("usr_alice"))
	answers := make([]idemAnswer, 20)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = idemPost(t, url, alice, "order-42", `{"name":"lamp"}`)
		}()
	}
	wg.Wait()
	if n := things.Created.Load(); n != 1 {
		t.Fatalf("created %d things, want 1", n)
	}
	var first string
	for i, a := range answers {
		switch a.status {
		case 201:
			if first == "" {
				first = a.body
			}
			if a.body != first {
				t.Fatalf("idemAnswer %d = %s, want the first idemAnswer %s replayed", i, a.body, first)
			}
		case 409:
			mustError(t, a.status, a.body, 409, "idempotency_key_in_use")
		default:
			t.Fatalf("idemAnswer %d = %d %s, want 201 or 409", i, a.status, a.body)
		}
	}
	again := idemPost(t, url, alice, "order-42", `{"name":"lamp"}`)
	if again.status != 201 || again.body != first || again.header.Get("Idempotent-Replayed") != "true" ||
		again.header.Get("Location") != "/v1/test/things/lamp" {
		t.Fatalf("replay = %d %v %s, want the first idemAnswer with its Location, marked replayed", again.status, again.header, again.body)
	}
}

func TestTheSameKeyWithAnotherBodyGets422(t *testing.T) {
	env, things := thingsEnv(t)
	url, alice := env.Public.URL+"/v1/test/things", jwttest.Token(t, jwttest.WithSubject("usr_alice"))
	if a := idemPost(t, url, alice, "k1", `{"name":"lamp"}`); a.status != 201 {
		t.Fatalf("first = %d %s", a.status, a.body)
	}
	a := idemPost(t, url, alice, "k1", `{"name":"chair"}`)
	mustError(t, a.status, a.body, 422, "idempotency_key_reused")
	if things.Created.Load() != 1 {
		t.Fatal("the reused key ran the handler again")
	}
}

func TestAnotherCallersIdenticalKeyIsIndependent(t *testing.T) {
	env, things := thingsEnv(t)
	url := env.Public.URL + "/v1/test/things"
	alice, bob := jwttest.Token(t, jwttest.WithSubject("usr_alice")), jwttest.Token(t, jwttest.WithSubject("usr_bob"))
	a := idemPost(t, url, alice, "same-key", `{"name":"lamp"}`)
	b := idemPost(t, url, bob, "same-key", `{"name":"lamp"}`)
	if a.status != 201 || b.status != 201 || b.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("alice %d, bob %d (%v); want both created, bob's not replayed", a.status, b.status, b.header)
	}
	if !strings.Contains(b.body, `"owner":"usr_bob"`) || things.Created.Load() != 2 {
		t.Fatalf("bob got %s (%d created), want his own thing", b.body, things.Created.Load())
	}
}

func TestAFailedRequestReleasesItsKey(t *testing.T) {
	env, things := thingsEnv(t)
	url, alice := env.Public.URL+"/v1/test/things", jwttest.Token(t, jwttest.WithSubject("usr_alice"))
	first := idemPost(t, url, alice, "retry-me", `{"name":"fail-once"}`)
	mustError(t, first.status, first.body, 503, "unavailable")
	if second := idemPost(t, url, alice, "retry-me", `{"name":"fail-once"}`); second.status != 201 || things.Created.Load() != 1 {
		t.Fatalf("retry = %d %s, want the retry to run and create", second.status, second.body)
	}
}

func TestStoredAnswersAreSealed(t *testing.T) {
	env, _ := thingsEnv(t)
	url, alice := env.Public.URL+"/v1/test/things", jwttest.Token(t, jwttest.WithSubject("usr_alice"))
	idemPost(t, url, alice, "sealed-key", `{"name":"canary-7f3a"}`)
	rows, err := env.DB.Pool.Query(context.Background(), `SELECT scope_hash, key_hash, response_body, fingerprint FROM idempotency_keys`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
		var scope, key, body []byte
		var fp []byte
		if err := rows.Scan(&scope, &key, &body, &fp); err != nil {
			t.Fatal(err)
		}
		for _, b := range [][]byte{scope, key, body, fp} {
			for _, canary := range []string{"canary-7f3a", "usr_alice", "sealed-key"} {
				if strings.Contains(string(b), canary) {
					t.Fatalf("idempotency_keys holds %q in the clear", canary)
				}
			}
		}
	}
	if n != 1 {
		t.Fatalf("rows = %d, want 1", n)
	}
}

func TestBadIdempotencyKeysAreRefused(t *testing.T) {
	env, things := thingsEnv(t)
	url, alice := env.Public.URL+"/v1/test/things", jwttest.Token(t, jwttest.WithSubject("usr_alice"))
	for _, tt := range []struct{ name, key string }{
		{"empty", ""},
		{"too long", strings.Repeat("k", 256)},
		{"a control character", "a\tb"},
		{"not ASCII", "clé"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := idemPost(t, url, alice, tt.key, `{"name":"lamp"}`)
			mustError(t, a.status, a.body, 400, "invalid_request")
		})
	}
	if a := idemPost(t, url, alice, strings.Repeat("k", 255), `{"name":"lamp"}`); a.status != 201 {
		t.Fatalf("a 255-character key = %d %s, want 201", a.status, a.body)
	}
	if things.Created.Load() != 1 {
		t.Fatal("a refused key ran the handler")
	}
}

func TestRevealWithAnIdempotencyKeyStoresNoSecretAndRevealsAfreshOnRepeat(t *testing.T) {
	env := apitest.Start(t)
	ref := sealFor(t, env, "user_idem_reveal", "bank_access_token", `{"access_token":"`+canaryToken+`","provider":"sandbox"}`)
	client := env.ServiceClient(t, "payments")
	do := func(body string) (int, http.Header, string) {
		req, err := http.NewRequest(http.MethodPost, revealURL(env, ref), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "reveal-key-1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	status, _, body := do(`{"purpose":"payment_initiation"}`)
	if status != 200 || !strings.Contains(body, canaryToken) {
		t.Fatalf("first reveal = %d %s", status, body)
	}
	status, h, body := do(`{"purpose":"payment_initiation"}`)
	if status != 200 || !strings.Contains(body, canaryToken) || h.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("repeat = %d %v %s, want a fresh reveal marked replayed", status, h, body)
	}
	status, _, body = do(`{"purpose":"balance_check"}`)
	mustError(t, status, body, 422, "idempotency_key_reused")
	var stored int
	if err := env.DB.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM idempotency_keys WHERE length(response_body) > 80`).Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("stored reveal answers with a body = %d (%v), want none: only the claim is kept", stored, err)
	}
	if n := auditCount(t, env, `action = 'credential.reveal' AND outcome = 'success' AND target = $1`, ref); n != 2 {
		t.Fatalf("audited reveals = %d, want 2 (the repeat reveals afresh)", n)
	}
	if strings.Contains(pgDump(t, env.DBURL), "CANARY") {
		t.Fatal("the secret is in the database")
	}
}

func TestComplianceKeysAreScopedToTheStaffMember(t *testing.T) {
	env := apitest.Start(t)
	console := env.ServiceClient(t, "compliance-console")
	verify := env.Internal.URL + "/compliance/v1/audit/verify"
	do := func(token string) idemAnswer {
		req, _ := http.NewRequest(http.MethodPost, verify, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Idempotency-Key", "verify-1")
		resp, err := console.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return idemAnswer{resp.StatusCode, resp.Header, string(b)}
	}
	first := do(jwttest.StaffToken(t, jwttest.WithSubject("stf_ann")))
	again := do(jwttest.StaffToken(t, jwttest.WithSubject("stf_ann")))
	other := do(jwttest.StaffToken(t, jwttest.WithSubject("stf_ben")))
	if first.status != 200 || again.header.Get("Idempotent-Replayed") != "true" || other.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first %d, again replayed %q, other replayed %q; want ann's replayed and ben's not",
			first.status, again.header.Get("Idempotent-Replayed"), other.header.Get("Idempotent-Replayed"))
	}
}
