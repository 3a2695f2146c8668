package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/accountnumber"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/awskms/kmstest"
)

// sealFor stores a credential for the subject with external id sub, as the
// linking and manual-entry features do, and returns its ref.
func sealFor(t testing.TB, env *apitest.Env, sub, kind, secret string) string {
	t.Helper()
	ctx := context.Background()
	var ref string
	err := env.DB.InTx(ctx, func(tx pgx.Tx) error {
		subjectID, err := vault.EnsureSubject(ctx, tx, sub)
		if err != nil {
			return err
		}
		ref, err = env.Store.Seal(ctx, tx, ownerOf(kind), subjectID, kind, []byte(secret), "")
		return err
	})
	if err != nil {
		t.Fatalf("seal: %v", err)
	}
	return ref
}

func revealURL(env *apitest.Env, ref string) string {
	return env.Internal.URL + "/internal/v1/credentials/" + ref + "/reveal"
}

func auditCount(t *testing.T, env *apitest.Env, where string, args ...any) int {
	t.Helper()
	var n int
	if err := env.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM audit_entries WHERE `+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

const canaryToken = "access-sandbox-CANARY-7f3e9a1c-5b2d-4e8f-9a6b-1c2d3e4f5a6b"

func TestRevealGivesTheSecretExactlyAndAuditsIt(t *testing.T) {
	env := apitest.Start(t)
	secret := `{"access_token":"` + canaryToken + `","provider":"sandbox"}`
	ref := sealFor(t, env, "user_reveal_1", banklink.KindAccessToken, secret)

	status, h, body := apitest.Do(t, env.ServiceClient(t, "payments"), "POST", revealURL(env, ref), "", "application/json", `{"purpose":"payment_initiation"}`)
	if status != 200 {
		t.Fatalf("reveal = %d %s", status, body)
	}
	var got struct {
		Ref    string          `json:"ref"`
		Kind   string          `json:"kind"`
		Secret json.RawMessage `json:"secret"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if got.Ref != ref || got.Kind != banklink.KindAccessToken || string(got.Secret) != secret {
		t.Fatalf("reveal = %+v, want the sealed secret exactly", got)
	}
	if h.Get("Cache-Control") != "no-store" {
		t.Fatal("a revealed secret must not be cached")
	}
	if n := auditCount(t, env, `action = 'credential.reveal' AND outcome = 'success' AND actor = 'payments' AND target = $1
		AND details->>'kind' = 'bank_access_token' AND details->>'purpose' = 'payment_initiation' AND subject_pseudonym IS NOT NULL`, ref); n != 1 {
		t.Fatalf("audited successful reveals = %d, want 1", n)
	}
	// The secret is nowhere but in the answer: not in the logs, not in a
	// dump of the whole database.
	if strings.Contains(env.Logs.String(), "CANARY") {
		t.Fatal("the secret reached the log")
	}
	dump := pgDump(t, env.DBURL)
	if strings.Contains(dump, "CANARY") || strings.Contains(dump, "user_reveal_1") && strings.Count(dump, "user_reveal_1") > 1 {
		t.Fatal("the secret (or the subject outside subjects) is in the database dump in the clear")
	}
}

// pgDump dumps the whole database as SQL text, as an operator's backup would
// (as the owner: the serving role cannot read sequences); url is the
// serving URL pgtest gave.
func pgDump(t *testing.T, url string) string {
	t.Helper()
	out, err := exec.Command("pg_dump", "--no-owner", "--data-only", pgtest.OwnerURL(t, url)).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_dump: %v: %s", err, out)
	}
	return string(out)
}

func TestRevealRefusalsAreAuditedAndRevealNothing(t *testing.T) {
	env := apitest.Start(t)
	ref := sealFor(t, env, "user_reveal_2", banklink.KindAccessToken, `{"access_token":"`+canaryToken+`","provider":"sandbox"}`)
	cases := []struct {
		name, service, ref, body string
		status                   int
		code                     string
		audited                  bool
	}{
		{"a kind the policy does not give the service", "reporting", ref, `{"purpose":"statement"}`, 403, "forbidden", true},
		{"a purpose the policy does not list", "payments", ref, `{"purpose":"marketing"}`, 403, "forbidden", true},
		{"an unknown reference", "payments", "cred_" + strings.Repeat("a", 32), `{"purpose":"payment_initiation"}`, 404, "not_found", true},
		{"a malformed reference", "payments", "cred_%27%20OR%201=1--", `{"purpose":"payment_initiation"}`, 404, "not_found", true},
		{"a path that is not a reference", "payments", "cred_../../etc", `{"purpose":"payment_initiation"}`, 404, "not_found", false},
		{"no purpose", "payments", ref, `{}`, 400, "invalid_request", false},
		{"an unknown field", "payments", ref, `{"purpose":"payment_initiation","kind":"x"}`, 400, "invalid_request", false},
		{"a service that is not in the policy", "stranger", ref, `{"purpose":"payment_initiation"}`, 403, "forbidden", false},
		{"a compliance console", "compliance-console", ref, `{"purpose":"payment_initiation"}`, 403, "forbidden", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := auditCount(t, env, `action = 'credential.reveal' AND outcome = 'denied'`)
			status, _, body := apitest.Do(t, env.ServiceClient(t, tc.service), "POST", revealURL(env, tc.ref), "", "application/json", tc.body)
			mustError(t, status, body, tc.status, tc.code)
			if strings.Contains(body, "CANARY") {
				t.Fatal("a refusal carries the secret")
			}
			after := auditCount(t, env, `action = 'credential.reveal' AND outcome = 'denied'`)
			if tc.audited && after != before+1 {
				t.Fatalf("denied reveals audited %d → %d, want one more", before, after)
			}
		})
	}
}

func TestRevealFailsClosedWhenTheAuditLogCannotTakeTheEntry(t *testing.T) {
	env := apitest.Start(t)
	ref := sealFor(t, env, "user_reveal_3", banklink.KindAccessToken, `{"access_token":"`+canaryToken+`","provider":"sandbox"}`)
	ctx := context.Background()
	// Only the owner can put a trigger on the audit log.
	_, err := pgtest.OpenOwner(t, env.DBURL).Pool.Exec(ctx, `
		CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$;
		CREATE TRIGGER audit_down BEFORE INSERT ON audit_entries FOR EACH ROW EXECUTE FUNCTION audit_down();`)
	if err != nil {
		t.Fatal(err)
	}
	status, h, body := apitest.Do(t, env.ServiceClient(t, "payments"), "POST", revealURL(env, ref), "", "application/json", `{"purpose":"payment_initiation"}`)
	mustError(t, status, body, 503, "unavailable")
	if h.Get("Retry-After") == "" || strings.Contains(body, "CANARY") || strings.Contains(body, "disk full") {
		t.Fatalf("want 503 with Retry-After and neither secret nor cause: %v %s", h, body)
	}
}

func TestRevealFailsClosedWhenTheKeyProviderIsDownAndResumesWhenItIsBack(t *testing.T) {
	kms := kmstest.NewServer(t)
	env := apitest.StartWith(t, kmstest.Provider(t, kms))
	secret := `{"access_token":"` + canaryToken + `","provider":"sandbox"}`
	ref := sealFor(t, env, "user_reveal_4", banklink.KindAccessToken, secret)
	env.Ring.Purge() // a cold cache: the next open must ask KMS

	kms.InjectError("KMSInternalException", -1)
	client := env.ServiceClient(t, "payments")
	status, h, body := apitest.Do(t, client, "POST", revealURL(env, ref), "", "application/json", `{"purpose":"payment_initiation"}`)
	mustError(t, status, body, 503, "unavailable")
	if h.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	status, _, body = apitest.Do(t, nil, "GET", env.Public.URL+"/readyz", "", "", "")
	mustError(t, status, body, 503, "unavailable")

	kms.ClearErrors()
	status, _, body = apitest.Do(t, client, "POST", revealURL(env, ref), "", "application/json", `{"purpose":"payment_initiation"}`)
	if status != 200 || !strings.Contains(body, canaryToken) {
		t.Fatalf("after the provider came back: %d %s", status, body)
	}
	if status, _, _ := apitest.Do(t, nil, "GET", env.Public.URL+"/readyz", "", "", ""); status != 200 {
		t.Fatalf("readyz after recovery = %d", status)
	}
}

// TestRotationWhileServicesRevealLosesNoReveal rotates the KMS root key and
// re-seals every subject while twenty services reveal in a loop: every
// reveal succeeds with the right secret, and every key and record ends on
// the newest versions.
func TestRotationWhileServicesRevealLosesNoReveal(t *testing.T) {
	kms := kmstest.NewServer(t)
	env := apitest.StartWith(t, kmstest.Provider(t, kms))
	secrets := map[string]string{}
	var refs []string
	for i := 0; i < 12; i++ {
		s := fmt.Sprintf(`{"access_token":"access-sandbox-%04d","provider":"sandbox"}`, i)
		ref := sealFor(t, env, fmt.Sprintf("user_rot_%d", i%4), banklink.KindAccessToken, s)
		secrets[ref], refs = s, append(refs, ref)
	}
	ageKeys(t, env)
	kms.Rotate(kms.KeyID())

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var reveals, failures atomic.Int64
	client := env.ServiceClient(t, "payments")
	for g := 0; g < 20; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := g; ctx.Err() == nil; i++ {
				ref := refs[i%len(refs)]
				status, _, body := apitest.Do(t, client, "POST", revealURL(env, ref), "", "application/json", `{"purpose":"balance_check"}`)
				reveals.Add(1)
				if status != 200 || !strings.Contains(body, secrets[ref]) {
					failures.Add(1)
					t.Errorf("reveal during rotation = %d %s", status, body)
				}
			}
		}(g)
	}
	for reveals.Load() < 50 { // let the reveals get going first
		time.Sleep(5 * time.Millisecond)
	}
	res, err := env.Store.Rotate(ctx, env.DB, vault.RotationOptions{Cryptoperiod: 24 * time.Hour, Batch: 2})
	for n := reveals.Load(); reveals.Load() < n+50; { // and keep going after it
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	wg.Wait()
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if failures.Load() != 0 {
		t.Fatalf("%d of %d reveals failed during rotation", failures.Load(), reveals.Load())
	}
	if res.ResealedSubjects != 4 || res.ResealedRecords != 12 {
		t.Fatalf("rotation = %+v, want 4 subjects and 12 records re-sealed", res)
	}
	assertAllOnNewest(t, env, kms, 2)
}

// assertAllOnNewest checks that every subject key is version wantVersion
// and under the active keyring epoch, every keyring key wrapped under KMS's
// newest backing key, and every record under the newest subject key.
func assertAllOnNewest(t *testing.T, env *apitest.Env, kms *kmstest.Server, wantVersion int) {
	t.Helper()
	ctx := context.Background()
	var off int
	if err := env.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM keystore.subject_keys
		WHERE version <> $1 OR keyring_epoch IS DISTINCT FROM (SELECT max(epoch) FROM keystore.keyring_keys)`, wantVersion).Scan(&off); err != nil {
		t.Fatal(err)
	}
	if off != 0 {
		t.Fatalf("%d subject keys not at v%d under the active keyring epoch", off, wantVersion)
	}
	rows, err := env.DB.Pool.Query(ctx, `SELECT wrapped FROM keystore.keyring_keys`)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		t.Fatal(err)
	}
	newest := kms.Versions(kms.KeyID())
	for _, w := range wrapped {
		if _, backing, ok := kmstest.BlobKey(w); !ok || backing != newest {
			t.Fatalf("keyring key wrapped under backing version %d, want %d", backing, newest)
		}
	}
	var behind int
	if err := env.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM credentials WHERE key_version <> $1`, wantVersion).Scan(&behind); err != nil {
		t.Fatal(err)
	}
	if behind != 0 {
		t.Fatalf("%d records still sealed under an old key version", behind)
	}
}

// ageKeys makes every subject key two days old, so that a 24-hour
// cryptoperiod finds them due without waiting or an injected clock.
func ageKeys(t *testing.T, env *apitest.Env) {
	t.Helper()
	if _, err := env.DB.Pool.Exec(context.Background(), `UPDATE keystore.subject_keys SET created_at = now() - interval '2 days'`); err != nil {
		t.Fatal(err)
	}
}

func TestARotationStoppedHalfwayIsFinishedByTheNextRun(t *testing.T) {
	kms := kmstest.NewServer(t)
	env := apitest.StartWith(t, kmstest.Provider(t, kms))
	for i := 0; i < 10; i++ {
		sealFor(t, env, fmt.Sprintf("user_half_%d", i), accountnumber.Kind, `{"account_number":"000123456789","routing_number":"011000015"}`)
	}
	ageKeys(t, env)
	kms.Rotate(kms.KeyID())
	opts := vault.RotationOptions{Cryptoperiod: 24 * time.Hour, Batch: 3}
	ctx, kill := context.WithCancel(context.Background())
	// Kill once a few subjects are re-sealed: counted by what was done, not
	// by steps, since the rewrap's batches grow with the system keys.
	opts.Progress = func(_, resealed, _ int) {
		if resealed >= 3 {
			kill()
		}
	}
	if _, err := env.Store.Rotate(ctx, env.DB, opts); err == nil {
		t.Fatal("the killed run reported success")
	}
	var left int
	if err := env.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM keystore.subject_keys WHERE version = 1`).Scan(&left); err != nil || left == 0 || left == 10 {
		t.Fatalf("the kill should leave some subjects to finish: %d of 10 at v1 (%v)", left, err)
	}
	opts.Progress = nil
	res, err := env.Store.Rotate(context.Background(), env.DB, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.ResealedSubjects != left {
		t.Fatalf("the second run re-sealed %d subjects, want the %d the first left", res.ResealedSubjects, left)
	}
	assertAllOnNewest(t, env, kms, 2)
	// A third run finds nothing to do.
	if res, err := env.Store.Rotate(context.Background(), env.DB, opts); err != nil || res != (vault.RotationResult{}) && res.ResealedSubjects != 0 {
		t.Fatalf("a run with nothing due = %+v, %v", res, err)
	}
	client := env.ServiceClient(t, "payments")
	rows, _ := env.DB.Pool.Query(context.Background(), `SELECT ref FROM credentials`)
	refs, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, ref := range refs {
		if status, _, body := apitest.Do(t, client, "POST", revealURL(env, ref), "", "application/json", `{"purpose":"payment_initiation"}`); status != 200 {
			t.Fatalf("reveal after the resumed rotation = %d %s", status, body)
		}
	}
}
