package transittest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/vault/transit/transittest"
)

func do(t *testing.T, srv *transittest.Server, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := srv.Client().Do(req) // not http.DefaultClient: see Server.Client
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("answer is not JSON: %q", raw)
		}
	}
	return resp.StatusCode, out
}

func TestTheServerAnswersInVaultsShape(t *testing.T) {
	t.Parallel()
	srv := transittest.NewServer(t)
	tok := transittest.DefaultToken
	tests := []struct {
		name, method, path, token, body string
		wantStatus                      int
		wantError                       string // first of "errors"; "-" for none
	}{
		{"no token is permission denied", "GET", "/v1/transit/keys/kluis", "", "", 403, "permission denied"},
		{"a wrong token is permission denied", "GET", "/v1/transit/keys/kluis", "nope", "", 403, "permission denied"},
		{"an unknown path is not found", "GET", "/v1/secret/data/x", tok, "", 404, "-"},
		{"an unknown key reads as not found", "GET", "/v1/transit/keys/none", tok, "", 404, "-"},
		{"a ciphertext without prefix is refused", "PUT", "/v1/transit/decrypt/kluis", tok, `{"ciphertext":"abc"}`, 400, "invalid ciphertext: no prefix"},
		{"a wrapped data key has no plaintext", "PUT", "/v1/transit/datakey/wrapped/kluis", tok, `{}`, 200, "-"},
		{"a key reads", "GET", "/v1/transit/keys/kluis", tok, "", 200, "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := do(t, srv, tt.method, tt.path, tt.token, tt.body)
			if status != tt.wantStatus {
				t.Errorf("status = %d, want %d (%v)", status, tt.wantStatus, out)
			}
			errs, hasErrs := out["errors"].([]any)
			if tt.wantStatus >= 400 && !hasErrs {
				t.Errorf("error answer without an errors list: %v", out)
			}
			if tt.wantError != "-" && (len(errs) == 0 || errs[0] != tt.wantError) {
				t.Errorf("errors = %v, want %q first", errs, tt.wantError)
			}
		})
	}
	_, out := do(t, srv, "PUT", "/v1/transit/datakey/wrapped/kluis", tok, `{}`)
	data, _ := out["data"].(map[string]any)
	if _, leaked := data["plaintext"]; leaked || !strings.HasPrefix(data["ciphertext"].(string), "vault:v1:") {
		t.Errorf("datakey/wrapped answered %v", data)
	}
}

func TestASealedServerSaysSo(t *testing.T) {
	t.Parallel()
	srv := transittest.NewServer(t)
	srv.Seal(true)
	status, out := do(t, srv, "GET", "/v1/transit/keys/kluis", transittest.DefaultToken, "")
	errs, _ := out["errors"].([]any)
	if status != 503 || len(errs) != 1 || errs[0] != "Vault is sealed" {
		t.Fatalf("sealed answer: %d %v", status, out)
	}
}

func TestRotateAddsAVersion(t *testing.T) {
	t.Parallel()
	srv := transittest.NewServer(t)
	status, _ := do(t, srv, "PUT", "/v1/transit/keys/kluis/rotate", transittest.DefaultToken, "")
	if status != 204 {
		t.Fatalf("rotate: %d", status)
	}
	_, out := do(t, srv, "GET", "/v1/transit/keys/kluis", transittest.DefaultToken, "")
	data, _ := out["data"].(map[string]any)
	if data["latest_version"] != float64(2) {
		t.Fatalf("latest_version = %v, want 2", data["latest_version"])
	}
	if got := srv.Calls(transittest.CallRotate); got != 1 {
		t.Fatalf("rotate calls = %d, want 1", got)
	}
}
