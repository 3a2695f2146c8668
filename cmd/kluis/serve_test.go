package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault/localkek"
)

// TestServeWiresEveryFeature builds kluis from its configuration exactly as
// `kluis serve` does (sandbox bank, local key) and links an account through
// the public listener: a smoke test of the wiring in this package, which the
// feature tests (built on api/apitest) do not cover.
func TestServeWiresEveryFeature(t *testing.T) {
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
	defer a.close()
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
	defer func() { stop(); <-done }()

	tok := jwttest.Token(t, jwttest.WithSubject("user_wiring"))
	call := func(method, path, body string, want int) map[string]any {
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
	session := call("POST", "/v1/link/sessions", `{"products":["auth"]}`, 201)
	pub := call("POST", "/v1/sandbox/public-token", `{"link_session_id":"`+session["id"].(string)+
		`","institution_id":"ins_sandbox","username":"user_good","password":"pass_good"}`, 201)
	item := call("POST", "/v1/link/sessions/"+session["id"].(string)+"/exchange", `{"public_token":"`+pub["public_token"].(string)+`"}`, 201)
	id := item["item"].(map[string]any)["id"].(string)
	call("GET", "/v1/items/"+id, "", 200)
	call("GET", "/readyz", "", 200)
	call("DELETE", "/v1/items/"+id, "", 204)
}
