package localkek_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/localkek"
	"github.com/kluis-dev/kluis/vault/vaulttest"
)

func TestContract(t *testing.T) {
	vaulttest.TestProvider(t, func(t *testing.T) vaulttest.Harness {
		return vaulttest.Harness{Provider: newProvider(t), ProviderName: "local"}
	})
}

// newProvider generates a key file in a temporary folder and opens it.
func newProvider(t *testing.T) *localkek.Provider {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kek")
	if err := localkek.Generate(path); err != nil {
		t.Fatalf("Generate: %v", err)
	}
	p, err := localkek.New(path)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// writeKeyFile writes content to a fresh file with the given mode.
func writeKeyFile(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode passes through the umask; set it exactly.
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestNew(t *testing.T) {
	t.Parallel()
	good := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		wantErr string // "" for success
	}{
		{"one line with a newline is a key", good + "\n", 0o600, ""},
		{"one line without a newline is a key", good, 0o600, ""},
		{"a CRLF line end is a key", good + "\r\n", 0o600, ""},
		{"an owner-read-only file is a key", good + "\n", 0o400, ""},
		{"a group-readable file is refused", good + "\n", 0o640, "readable by its owner only"},
		{"a world-readable file is refused", good + "\n", 0o644, "readable by its owner only"},
		{"a group-writable file is refused", good + "\n", 0o620, "readable by its owner only"},
		{"an empty file is refused", "", 0o600, "one line"},
		{"two lines are refused", good + "\n" + good + "\n", 0o600, "one line"},
		{"a trailing space is refused", good + " \n", 0o600, "one line"},
		{"a short key is refused", base64.StdEncoding.EncodeToString(make([]byte, 16)) + "\n", 0o600, "exactly 32 bytes"},
		{"a long key is refused", base64.StdEncoding.EncodeToString(make([]byte, 48)) + "\n", 0o600, "exactly 32 bytes"},
		{"URL-safe base64 is refused", strings.Repeat("_", 43) + "=\n", 0o600, "exactly 32 bytes"},
		{"unpadded base64 is refused", strings.TrimRight(good, "=") + "\n", 0o600, "exactly 32 bytes"},
		{"hex is refused", strings.Repeat("ab", 32) + "\n", 0o600, "exactly 32 bytes"},
		{"a large file is refused", strings.Repeat("A", 4096), 0o600, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeKeyFile(t, tt.content, tt.mode)
			_, err := localkek.New(path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New succeeded, want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New: %v, want an error containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), good) || (len(tt.content) > 8 && strings.Contains(err.Error(), strings.TrimSpace(tt.content))) {
				t.Fatalf("error quotes the key file: %v", err)
			}
		})
	}
}

func TestNewRefusesAMissingFileAndAFolder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := localkek.New(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := localkek.New(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("folder: %v, want not a regular file", err)
	}
}

func TestGenerate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "kek")
	if err := localkek.Generate(path); err != nil {
		t.Fatalf("Generate: %v", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != 0o600 {
		t.Errorf("mode = %#o, want 0600", got)
	}
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSuffix(string(content), "\n")
	key, err := base64.StdEncoding.DecodeString(line)
	if err != nil || len(key) != 32 {
		t.Fatalf("file holds %d bytes (err %v), want base64 of 32", len(key), err)
	}
	if err := localkek.Generate(path); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second Generate over the same file: %v, want ErrExist", err)
	}
	after, err := os.ReadFile(path)
	if err != nil || string(after) != string(content) {
		t.Fatal("second Generate changed the existing key file")
	}
}

func TestDescribeFingerprintNamesTheKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kek")
	if err := localkek.Generate(path); err != nil {
		t.Fatal(err)
	}
	a, err := localkek.New(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := localkek.New(path)
	if err != nil {
		t.Fatal(err)
	}
	infoA, _ := a.Describe(ctx)
	infoB, _ := b.Describe(ctx)
	infoC, _ := newProvider(t).Describe(ctx)
	if infoA != infoB {
		t.Errorf("one key file, two descriptions: %+v, %+v", infoA, infoB)
	}
	if infoA.KeyID == infoC.KeyID {
		t.Error("two keys share a fingerprint")
	}
	if len(infoA.KeyID) != 16 || infoA.LatestVersion != "1" || infoA.Provider != "local" {
		t.Errorf("Describe = %+v, want provider local, a 16-hex-digit fingerprint, version 1", infoA)
	}
	content, _ := os.ReadFile(path)
	key, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(content)))
	if strings.Contains(hex.EncodeToString(key), infoA.KeyID) {
		t.Error("fingerprint carries key bytes")
	}
}

func TestAKeyWrappedUnderAnotherRootKeyIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	k, err := newProvider(t).GenerateDataKey(ctx, "sk_1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = newProvider(t).Unwrap(ctx, "sk_1", k.Wrapped)
	if !errors.Is(err, vault.ErrKeyRefused) {
		t.Fatalf("Unwrap under another root key: %v, want ErrKeyRefused", err)
	}
}

func TestAnUnknownFormatOrVersionIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newProvider(t)
	k, err := p.GenerateDataKey(ctx, "sk_1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		wrapped vault.WrappedKey
	}{
		{"a format byte from the future", func() vault.WrappedKey {
			ct := append([]byte(nil), k.Wrapped.Ciphertext...)
			ct[0] = 2
			return vault.WrappedKey{Ciphertext: ct, RootVersion: "1"}
		}()},
		{"a root version that does not exist", vault.WrappedKey{Ciphertext: k.Wrapped.Ciphertext, RootVersion: "2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := p.Unwrap(ctx, "sk_1", tt.wrapped); !errors.Is(err, vault.ErrKeyRefused) {
				t.Fatalf("Unwrap: %v, want ErrKeyRefused", err)
			}
		})
	}
}

func TestADoneContextIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := newProvider(t).GenerateDataKey(ctx, "sk_1")
	if !errors.Is(err, vault.ErrKeyUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("GenerateDataKey with a cancelled context: %v, want ErrKeyUnavailable and Canceled", err)
	}
}
