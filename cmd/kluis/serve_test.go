package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api/devpki"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault/localkek"
)

// TestServeWiresEveryFeature builds kluis from its configuration exactly as
// `kluis serve` does (sandbox bank, local key) and links an account through
// the public listener: a smoke test of the wiring in this package, which the
// feature tests (built on api/apitest) do not cover.
func TestServeWiresEveryFeature(t *testing.T) {
	call := serveForTest(t, "user_wiring")
	session := call("POST", "/v1/link/sessions", `{"products":["auth"]}`, 201)
	pub := call("POST", "/v1/sandbox/public-token", `{"link_session_id":"`+session["id"].(string)+
		`","institution_id":"ins_sandbox","username":"user_good","password":"pass_good"}`, 201)
	item := call("POST", "/v1/link/sessions/"+session["id"].(string)+"/exchange", `{"public_token":"`+pub["public_token"].(string)+`"}`, 201)
	id := item["item"].(map[string]any)["id"].(string)
	call("GET", "/v1/items/"+id, "", 200)
	call("GET", "/readyz", "", 200)
	call("DELETE", "/v1/items/"+id, "", 204)
}

// TestServeReloadsThePolicyOnSIGHUP runs `kluis serve` with the internal
// listener and a policy file, adds a service to the file and sends the
// process SIGHUP: the process goes on (SIGHUP would otherwise end it) and
// the new service is let in without a restart.
func TestServeReloadsThePolicyOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	kek := filepath.Join(dir, "kek.b64")
	if err := localkek.Generate(kek); err != nil {
		t.Fatal(err)
	}
	ca, err := devpki.NewCA("serve test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Server("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := server.Write(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	const policy = "services:\n  payments: {}\n"
	if err := os.WriteFile(policyFile, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	dbURL := pgtest.New(t)
	env := map[string]string{
		"KLUIS_DATABASE_URL": dbURL, "KLUIS_PUBLIC_ADDR": "127.0.0.1:0", "KLUIS_INTERNAL_ADDR": "127.0.0.1:0",
		"KLUIS_LOCAL_KEK_FILE": kek, "KLUIS_JWT_JWKS_FILE": jwttest.WriteJWKS(t, jwttest.DefaultKeys()...),
		"KLUIS_JWT_ISSUER": jwttest.Issuer, "KLUIS_LOG_LEVEL": "error",
		"KLUIS_INTERNAL_TLS_CERT": certFile, "KLUIS_INTERNAL_TLS_KEY": keyFile, "KLUIS_INTERNAL_CLIENT_CA": caFile,
		"KLUIS_SERVICE_POLICY_FILE": policyFile, "KLUIS_SPIFFE_TRUST_DOMAIN": "kluis.test",
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	logger, _ := newLogger(cfg, io.Discard)
	a, err := build(ctx, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, ready) }()
	var internal string
	select {
	case addrs := <-ready:
		internal = "https://" + addrs[1]
	case err := <-done:
		t.Fatalf("serve stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not listen")
	}
	stopped := false
	defer func() {
		if !stopped {
			stop()
			<-done
		}
	}()

	get := func(service string) int {
		t.Helper()
		pair, err := ca.Client(service, "spiffe://kluis.test/"+service)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := pair.TLS()
		if err != nil {
			t.Fatal(err)
		}
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		}}}
		resp, err := c.Get(internal + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get("newcomer"); got != 403 {
		t.Fatalf("a service not in the policy = %d, want 403", got)
	}
	if err := os.WriteFile(policyFile, []byte(policy+"  newcomer: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for get("newcomer") != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the new service was not let in after SIGHUP")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := get("payments"); got != 200 {
		t.Fatalf("payments after the reload = %d, want 200", got)
	}

	// The refusal of newcomer is in the audit log once serve has stopped,
	// though its minute had not ended: a stop loses no count.
	stop()
	<-done
	stopped = true
	db, err := postgres.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var refused int
	if err := db.Pool.QueryRow(context.Background(),
		`SELECT coalesce(sum((details->>'count')::int), 0) FROM audit_entries WHERE action = 'access.refused'`).Scan(&refused); err != nil {
		t.Fatal(err)
	}
	if refused < 1 { // newcomer may have been refused again before the reload
		t.Fatalf("audited refusals after stop = %d, want at least 1", refused)
	}
}

// apiCall makes one request of the served kluis as a user, requires the
// status want, and returns the decoded answer.
type apiCall func(method, path, body string, want int) map[string]any

// serveForTest builds kluis from its configuration exactly as `kluis serve`
// and `kluis dev` do (sandbox bank, local key), serves it until the test
// ends, and returns a caller with a token for sub.
func serveForTest(t *testing.T, sub string) apiCall {
	t.Helper()
	dir := t.TempDir()
	kek := filepath.Join(dir, "kek.b64")
	if err := localkek.Generate(kek); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"KLUIS_DATABASE_URL": pgtest.New(t), "KLUIS_PUBLIC_ADDR": "127.0.0.1:0",
		"KLUIS_LOCAL_KEK_FILE": kek, "KLUIS_JWT_JWKS_FILE": jwttest.WriteJWKS(t, jwttest.DefaultKeys()...),
		"KLUIS_JWT_ISSUER": jwttest.Issuer, "KLUIS_LOG_LEVEL": "error",
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	logger, _ := newLogger(cfg, io.Discard)
	a, err := build(ctx, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.close)
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, ready) }()
	var base string
	select {
	case addrs := <-ready:
		base = "http://" + addrs[0]
	case err := <-done:
		t.Fatalf("serve stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not listen")
	}
	t.Cleanup(func() { stop(); <-done })

	tok := jwttest.Token(t, jwttest.WithSubject(sub))
	return func(method, path, body string, want int) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		raw, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(raw, &out)
		if resp.StatusCode != want {
			t.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, raw, want)
		}
		return out
	}
}
