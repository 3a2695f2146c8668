package kmstest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/vault/awskms/kmstest"
)

// post sends a raw KMS JSON request, signed only in name: the fake checks
// that an Authorization header is there, not the signature.
func post(t *testing.T, srv *kmstest.Server, target, body string, signed bool) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	if target != "" {
		req.Header.Set("X-Amz-Target", target)
	}
	if signed {
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=x")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("answer is not JSON: %q", raw)
	}
	return resp.StatusCode, out
}

func TestTheServerSpeaksTheKMSProtocol(t *testing.T) {
	t.Parallel()
	srv := kmstest.NewServer(t)
	keyBody := `{"KeyId":"` + srv.KeyARN() + `"}`
	tests := []struct {
		name       string
		target     string
		body       string
		signed     bool
		wantStatus int
		wantType   string // "" for success
	}{
		{"an unsigned request is refused", "TrentService.DescribeKey", keyBody, false, 403, "MissingAuthenticationToken"},
		{"an unknown operation is refused", "TrentService.CreateKey", `{}`, true, 400, "UnknownOperationException"},
		{"a missing target is refused", "", `{}`, true, 400, "UnknownOperationException"},
		{"an unknown key is not found", "TrentService.DescribeKey", `{"KeyId":"alias/none"}`, true, 400, "NotFoundException"},
		{"a garbage blob is invalid ciphertext", "TrentService.Decrypt", `{"CiphertextBlob":"AAAA"}`, true, 400, "InvalidCiphertextException"},
		{"a data key needs a spec", "TrentService.GenerateDataKey", keyBody, true, 400, "ValidationException"},
		{"DescribeKey answers", "TrentService.DescribeKey", keyBody, true, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := post(t, srv, tt.target, tt.body, tt.signed)
			if status != tt.wantStatus {
				t.Errorf("status = %d, want %d (%v)", status, tt.wantStatus, out)
			}
			if got, _ := out["__type"].(string); got != tt.wantType {
				t.Errorf("__type = %q, want %q", got, tt.wantType)
			}
			if tt.wantType != "" {
				if _, ok := out["message"].(string); !ok {
					t.Errorf("error without message: %v", out)
				}
			}
		})
	}
}

func TestInjectedErrorsCarryTheirStatusAndRunOut(t *testing.T) {
	t.Parallel()
	srv := kmstest.NewServer(t)
	keyBody := `{"KeyId":"` + srv.KeyARN() + `"}`
	srv.InjectError("DependencyTimeoutException", 1, kmstest.OpDescribeKey)
	if status, out := post(t, srv, "TrentService.DescribeKey", keyBody, true); status != 503 || out["__type"] != "DependencyTimeoutException" {
		t.Fatalf("first call: %d %v, want 503 DependencyTimeoutException", status, out)
	}
	if status, _ := post(t, srv, "TrentService.DescribeKey", keyBody, true); status != 200 {
		t.Fatalf("second call: %d, want 200 once the injection ran out", status)
	}
	if got := srv.Calls(kmstest.OpDescribeKey); got != 2 {
		t.Fatalf("DescribeKey calls = %d, want 2", got)
	}
}
