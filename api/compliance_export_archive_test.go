package api_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
)

// sealIDNumber seals a South African identity number for the subject, as a
// ZA manual account's holder_id_ref is.
func sealIDNumber(t *testing.T, env *apitest.Env, sub, number string) string {
	t.Helper()
	ctx := context.Background()
	var ref string
	err := env.DB.InTx(ctx, func(tx pgx.Tx) error {
		sid, err := vault.EnsureSubject(ctx, tx, sub)
		if err != nil {
			return err
		}
		ref, err = env.Store.Seal(ctx, tx, vault.AccountOwner(kluis.NewID(kluis.PrefixAccount)), sid,
			verification.KindIDNumber, []byte(`{"id_number":"`+number+`"}`), number)
		return err
	})
	if err != nil {
		t.Fatalf("seal id number: %v", err)
	}
	return ref
}

// exportArchive posts a complete export request and answers the status,
// headers and body.
func (ce *complianceEnv) exportArchive(t *testing.T, sub, token, body string, header http.Header) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", ce.Internal.URL+"/compliance/v1/subjects/"+sub+"/export", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := ce.console.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, out
}

// openArchive decrypts an export with id and reads its files.
func openArchive(t *testing.T, archive []byte, id age.Identity) map[string][]byte {
	t.Helper()
	r, err := age.Decrypt(bytes.NewReader(archive), id)
	if err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		files[h.Name], _ = io.ReadAll(tr)
	}
}

func TestTheCompleteExportOpensWithTheKeyAndHoldsEverySealedField(t *testing.T) {
	ce := startCompliance(t)
	d := makeSubjectData(t, ce.Env, "user_full")
	idRef := sealIDNumber(t, ce.Env, "user_full", "8001015009087")
	other := makeSubjectData(t, ce.Env, "user_other")
	if s := ce.reveal(t, d.tokenRef); s != 200 {
		t.Fatalf("reveal = %d", s)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	recipient := id.Recipient().String()
	status, h, archive := ce.exportArchive(t, "user_full", staff(t, "staff_a"), `{"recipient":"`+recipient+`"}`, nil)
	if status != 200 {
		t.Fatalf("export = %d %s", status, archive)
	}
	if ct := h.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type = %q", ct)
	}
	sum := sha256.Sum256(archive)
	if got, want := h.Get("Repr-Digest"), "sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":"; got != want {
		t.Errorf("Repr-Digest = %q, want %q", got, want)
	}
	if bytes.Contains(archive, []byte("62001234567")) || bytes.Contains(archive, []byte("8001015009087")) {
		t.Fatal("the archive carries a number in the clear")
	}

	files := openArchive(t, archive, id)
	var m compliance.ExportManifest
	if err := json.Unmarshal(files["manifest.json"], &m); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if m.Format != compliance.ExportFormat || len(m.Files) != 2 {
		t.Errorf("manifest = %+v", m)
	}
	for _, f := range m.Files {
		got := sha256.Sum256(files[f.Name])
		if hexOf(got[:]) != f.SHA256 || len(files[f.Name]) != f.Bytes {
			t.Errorf("manifest's digest of %s does not match the file", f.Name)
		}
	}
	var sealed []compliance.SealedRecord
	if err := json.Unmarshal(files["sealed.json"], &sealed); err != nil {
		t.Fatalf("sealed.json: %v", err)
	}
	byRef := map[string]string{}
	for _, r := range sealed {
		byRef[r.Ref] = string(r.Fields)
	}
	if !strings.Contains(byRef[d.numberRef], `"62001234567"`) || !strings.Contains(byRef[d.numberRef], `"250655"`) {
		t.Errorf("sealed.json lacks the account number: %s", files["sealed.json"])
	}
	if !strings.Contains(byRef[idRef], `"8001015009087"`) {
		t.Errorf("sealed.json lacks the identity number: %s", files["sealed.json"])
	}
	withheldToken := false
	for _, w := range m.Withheld {
		if w.Ref == d.tokenRef && w.What == banklink.KindAccessToken && w.Reason != "" {
			withheldToken = true
		}
	}
	if !withheldToken {
		t.Errorf("the manifest does not say the provider token is withheld and why: %+v", m.Withheld)
	}
	all := string(files["manifest.json"]) + string(files["records.json"]) + string(files["sealed.json"])
	for _, secret := range []string{"access-sandbox-user_full", other.numberRef, other.tokenRef, "user_other"} {
		if strings.Contains(all, secret) {
			t.Errorf("the archive carries %q", secret)
		}
	}
	if m.Included["sealed_records"] != 2 || m.Included["records.items"] != 1 {
		t.Errorf("manifest counts = %v", m.Included)
	}

	wrong, _ := age.GenerateX25519Identity()
	if _, err := age.Decrypt(bytes.NewReader(archive), wrong); err == nil {
		t.Error("another key opens the archive")
	}

	// The audit entry names the digest, and no secret.
	var details string
	err = ce.DB.Pool.QueryRow(context.Background(), `
		SELECT details::text FROM audit_entries WHERE action = 'subject.exported' ORDER BY seq DESC LIMIT 1`).Scan(&details)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(details, hexOf(sum[:])) || !strings.Contains(details, recipient) {
		t.Errorf("audit details = %s", details)
	}
	for _, secret := range []string{"62001234567", "8001015009087", "access-sandbox"} {
		if strings.Contains(details, secret) || strings.Contains(ce.Logs.String(), secret) {
			t.Errorf("%q is in the audit entry or the logs", secret)
		}
	}
}

func TestTheCompleteExportRefusesBadRequestsAndNeverStoresTheArchive(t *testing.T) {
	ce := startCompliance(t)
	makeSubjectData(t, ce.Env, "user_refused")
	id, _ := age.GenerateX25519Identity()
	good := `{"recipient":"` + id.Recipient().String() + `"}`
	tok := staff(t, "staff_a")
	count := func() int {
		var n int
		if err := ce.DB.Pool.QueryRow(context.Background(),
			`SELECT count(*) FROM audit_entries WHERE action = 'subject.exported'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	cases := []struct {
		name, sub, token, body string
		want                   int
		reason                 string
	}{
		{"no recipient", "user_refused", tok, `{}`, 400, ""},
		{"a malformed recipient", "user_refused", tok, `{"recipient":"age1notakey"}`, 400, ""},
		{"an ssh key", "user_refused", tok, `{"recipient":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO"}`, 400, ""},
		{"an unknown field", "user_refused", tok, `{"recipient":"x","passphrase":"y"}`, 400, ""},
		{"an unknown subject", "nobody", tok, good, 404, ""},
		{"a stale MFA", "user_refused", jwttest.StaffToken(t, jwttest.WithSubject("staff_a"), jwttest.WithClaim("auth_time", 1)), good, 401, "mfa_stale"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := ce.exportArchive(t, tc.sub, tc.token, tc.body, nil)
			if status != tc.want {
				t.Fatalf("= %d %s, want %d", status, body, tc.want)
			}
			if tc.reason != "" && !strings.Contains(string(body), tc.reason) {
				t.Errorf("body = %s, want reason %s", body, tc.reason)
			}
		})
	}
	if n := count(); n != 0 {
		t.Errorf("%d exports audited after refusals, want 0", n)
	}

	// A repeat with the same Idempotency-Key exports afresh (a new
	// encryption, audited again) instead of replaying a stored archive.
	key := http.Header{"Idempotency-Key": {"export-1"}}
	s1, _, a1 := ce.exportArchive(t, "user_refused", tok, good, key)
	s2, _, a2 := ce.exportArchive(t, "user_refused", tok, good, key)
	if s1 != 200 || s2 != 200 || bytes.Equal(a1, a2) {
		t.Fatalf("repeats = %d, %d, same archive %v", s1, s2, bytes.Equal(a1, a2))
	}
	if n := count(); n != 2 {
		t.Errorf("%d exports audited, want 2", n)
	}
	// The key's record holds the claim and the status, sealed, never the
	// archive: what is stored is far smaller than the archive.
	var stored int
	if err := ce.DB.Pool.QueryRow(context.Background(),
		`SELECT coalesce(max(octet_length(response_body)), 0) FROM idempotency_keys`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored >= len(a1)/2 {
		t.Errorf("an idempotent answer of %d bytes is stored for an archive of %d", stored, len(a1))
	}
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }
