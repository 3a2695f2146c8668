package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api/idempotency"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/awskms/kmstest"
	"github.com/kluis-dev/kluis/vault/transit/transittest"
)

// keyringRecheck is short here so that the bound passes within a test.
const keyringRecheck = "2s"

// servingKluis is kluis built and serving as `kluis serve` runs it, with
// the key provider its env names.
type servingKluis struct {
	app  *app
	base string
}

func serveKluis(t *testing.T, env map[string]string) *servingKluis {
	t.Helper()
	env["KLUIS_DATABASE_URL"] = pgtest.New(t)
	env["KLUIS_PUBLIC_ADDR"] = "127.0.0.1:0"
	env["KLUIS_JWT_JWKS_FILE"] = jwttest.WriteJWKS(t, jwttest.DefaultKeys()...)
	env["KLUIS_JWT_ISSUER"] = jwttest.Issuer
	env["KLUIS_LOG_LEVEL"] = "error"
	env["KLUIS_KEYRING_RECHECK"] = keyringRecheck
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	logger, _ := newLogger(cfg, io.Discard)
	a, err := build(ctx, cfg, logger)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, ready) }()
	t.Cleanup(func() { stop(); <-done; a.close() })
	select {
	case addrs := <-ready:
		return &servingKluis{app: a, base: "http://" + addrs[0]}
	case err := <-done:
		t.Fatalf("serve stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not listen")
	}
	return nil
}

// readyz answers /readyz's status and Retry-After.
func (k *servingKluis) readyz(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get(k.base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

func (k *servingKluis) seal(ctx context.Context, sub string) (string, error) {
	var ref string
	err := k.app.db.InTx(ctx, func(tx pgx.Tx) error {
		subjectID, err := vault.EnsureSubject(ctx, tx, sub)
		if err != nil {
			return err
		}
		ref, err = k.app.store.Seal(ctx, tx, vault.ItemOwner(kluis.NewID(kluis.PrefixItem)), subjectID,
			banklink.KindAccessToken, []byte(`{"access_token":"t"}`), "")
		return err
	})
	return ref, err
}

// waitUntil polls cond every 200 ms until it holds or within passes.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(within); !cond(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %s", what, within)
		}
	}
}

// checkKeyringOutage is the contract for key-provider outages
// (docs/SECURITY.md, "Dependencies down"):
// with the provider gone (down or refusing), kluis serves on until the
// keyring key's recheck bound, then answers 503 (with Retry-After on
// /readyz) and writes nothing; it recovers by itself within seconds of the
// provider's return.
func checkKeyringOutage(t *testing.T, k *servingKluis, down, up func()) {
	ctx := context.Background()
	ref, err := k.seal(ctx, "user-before")
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := k.readyz(t); code != 200 {
		t.Fatalf("readyz = %d before the outage", code)
	}
	down()
	// The bound is 2 s; the recheck loop notices within a second of it.
	waitUntil(t, 20*time.Second, "readyz 503 after the recheck bound", func() bool {
		code, retry := k.readyz(t)
		return code == 503 && retry != ""
	})
	if _, err := k.app.store.Open(ctx, ref); kluis.ErrorCode(err) != kluis.EUnavailable {
		t.Fatalf("open past the bound = %v, want unavailable", err)
	}
	// The system keys are under the same bound: MACs (idempotency, hosted
	// pages, verification answers) and pseudonyms stop too, and an audit
	// entry naming a person is refused rather than written without its
	// pseudonym.
	waitUntil(t, 20*time.Second, "system keys unavailable past the bound", func() bool {
		_, err := k.app.sys.MAC(idempotency.SystemKey, []byte("x"))
		return kluis.ErrorCode(err) == kluis.EUnavailable
	})
	if err := k.app.sys.Ready(ctx); kluis.ErrorCode(err) != kluis.EUnavailable {
		t.Fatalf("system keys ready past the bound = %v", err)
	}
	entry := audit.Entry{ActorKind: audit.ActorSystem, Actor: "test", Action: "test.outage", Outcome: audit.OutcomeSuccess, Subject: "user-before"}
	if err := k.app.auditor.Record(ctx, entry); kluis.ErrorCode(err) != kluis.EUnavailable {
		t.Fatalf("audit entry naming a person past the bound = %v, want unavailable", err)
	}
	var before int
	count := `SELECT (SELECT count(*) FROM credentials) + (SELECT count(*) FROM keystore.subject_keys)`
	if err := k.app.db.Pool.QueryRow(ctx, count).Scan(&before); err != nil {
		t.Fatal(err)
	}
	if _, err := k.seal(ctx, "user-during"); kluis.ErrorCode(err) != kluis.EUnavailable {
		t.Fatalf("seal past the bound = %v, want unavailable", err)
	}
	var after int
	if err := k.app.db.Pool.QueryRow(ctx, count).Scan(&after); err != nil || after != before {
		t.Fatalf("a seal past the bound wrote %d rows (%v)", after-before, err)
	}
	up()
	// Within seconds: the recheck loop tries every second, and a breaker
	// that opened waits out its 10 s.
	waitUntil(t, 30*time.Second, "readyz 200 after the provider's return", func() bool {
		code, _ := k.readyz(t)
		return code == 200
	})
	if c, err := k.app.store.Open(ctx, ref); err != nil || string(c.Secret) != `{"access_token":"t"}` {
		t.Fatalf("open after recovery: %v", err)
	}
	if _, err := k.seal(ctx, "user-after"); err != nil {
		t.Fatalf("seal after recovery: %v", err)
	}
	if _, err := k.app.sys.MAC(idempotency.SystemKey, []byte("x")); err != nil {
		t.Fatalf("system key after recovery: %v", err)
	}
	if err := k.app.auditor.Record(ctx, entry); err != nil {
		t.Fatalf("audit entry after recovery: %v", err)
	}
}

func TestAKMSRootKeyDisabledStopsKluisWithinTheBoundAndItRecovers(t *testing.T) {
	kms := kmstest.NewServer(t)
	none := filepath.Join(t.TempDir(), "none")
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_KMS": kms.URL, "AWS_REGION": kmstest.Region,
		"AWS_ACCESS_KEY_ID": kmstest.AccessKeyID, "AWS_SECRET_ACCESS_KEY": kmstest.SecretAccessKey,
		"AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none,
	} {
		t.Setenv(k, v) // the SDK reads the process environment
	}
	k := serveKluis(t, map[string]string{"KLUIS_KEY_PROVIDER": "awskms", "KLUIS_AWSKMS_KEY_ID": kms.KeyID()})
	checkKeyringOutage(t, k,
		func() { kms.DisableKey(kms.KeyID()) },
		func() { kms.SetKeyState(kms.KeyID(), kmstest.StateEnabled) })
}

func TestASealedTransitStopsKluisWithinTheBoundAndItRecovers(t *testing.T) {
	srv := transittest.NewServer(t)
	t.Setenv("VAULT_ADDR", srv.URL) // the Vault client reads the process environment
	t.Setenv("VAULT_TOKEN", transittest.DefaultToken)
	k := serveKluis(t, map[string]string{"KLUIS_KEY_PROVIDER": "transit"})
	checkKeyringOutage(t, k, func() { srv.Seal(true) }, func() { srv.Seal(false) })
}

// The keyring's provider calls are what the goal counts: none for
// a new subject or a reveal once the keyring key is loaded.
func TestNewSubjectsAndRevealsMakeNoKMSCall(t *testing.T) {
	kms := kmstest.NewServer(t)
	none := filepath.Join(t.TempDir(), "none")
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_KMS": kms.URL, "AWS_REGION": kmstest.Region,
		"AWS_ACCESS_KEY_ID": kmstest.AccessKeyID, "AWS_SECRET_ACCESS_KEY": kmstest.SecretAccessKey,
		"AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none,
	} {
		t.Setenv(k, v)
	}
	k := serveKluis(t, map[string]string{"KLUIS_KEY_PROVIDER": "awskms", "KLUIS_AWSKMS_KEY_ID": kms.KeyID()})
	ctx := context.Background()
	// The system keys' confirmations (at half the 2 s bound) are the
	// recheck loop's, not the subjects' or the reveals'.
	before, sysBefore := kms.TotalCalls(), k.app.sys.ProviderCalls()
	var refs []string
	for i := range 100 {
		ref, err := k.seal(ctx, fmt.Sprintf("user-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}
	for _, ref := range refs {
		if _, err := k.app.store.Open(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
	// The recheck loop confirms the key at half its 2 s bound: allow for
	// those calls, and nothing per subject or per reveal.
	if got := kms.TotalCalls() - before - int(k.app.sys.ProviderCalls()-sysBefore); got > 10 {
		t.Fatalf("100 new subjects and 100 reveals made %d KMS calls", got)
	}

	// A root rotation rewraps the keyring key and the system keys, whatever
	// the number of subjects: at most 10 calls (the recheck loop's own
	// confirmations aside).
	kms.Rotate(kms.KeyID())
	before, loop, sysLoop := kms.TotalCalls(), k.app.ring.KeyringProviderCalls(), k.app.sys.ProviderCalls()
	res, err := k.app.store.Rotate(ctx, k.app.db, vault.RotationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	calls := kms.TotalCalls() - before - int(k.app.ring.KeyringProviderCalls()-loop) - int(k.app.sys.ProviderCalls()-sysLoop)
	if calls > 10 || res.RootRewrapped != 1+len(systemKeyNames()) || res.Rewrapped != 0 {
		t.Fatalf("root rotation over 100 subjects: %d KMS calls, %+v", calls, res)
	}
}
