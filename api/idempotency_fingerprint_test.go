package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
)

// keyedCall is one request with an Idempotency-Key.
func keyedCall(t *testing.T, c *http.Client, method, url, token, key, body string) (int, http.Header, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Idempotency-Key", key)
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// unkeyedV1 is the fingerprint kluis stored before keyed fingerprints:
// SHA-256 over a label and length-prefixed parts.
func unkeyedV1(parts ...[]byte) []byte {
	h := sha256.New()
	var n [4]byte
	for _, p := range append([][]byte{[]byte("kluis/idempotency/request/v1")}, parts...) {
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	return h.Sum(nil)
}

func fingerprints(t *testing.T, env *apitest.Env) [][]byte {
	t.Helper()
	rows, err := env.DB.Pool.Query(context.Background(), `SELECT fingerprint FROM idempotency_keys ORDER BY created_at`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var fp []byte
		if err := rows.Scan(&fp); err != nil {
			t.Fatal(err)
		}
		out = append(out, fp)
	}
	return out
}

// The attack of issue 11: with the stored fingerprint of a POST
// /v1/accounts and the account's mask, try every account number ending in
// the mask. The stored value is an HMAC under a system key bound to the
// caller and the key: no unkeyed hash of any candidate body matches it,
// the true one included.
func TestTheIdempotencyFingerprintOfAManualAccountCannotBeBruteForced(t *testing.T) {
	ve := startVerify(t)
	url := ve.Public.URL + "/v1/accounts"
	alice, bob := userToken(t, "user_fp_alice"), userToken(t, "user_fp_bob")
	body := manualBody(canaryAccount, goodRouting)
	status, _, first := keyedCall(t, nil, "POST", url, alice, "acct-key-1", body)
	want(t, status, 201, first, nil)
	fps := fingerprints(t, ve.Env)
	if len(fps) != 1 || len(fps[0]) != sha256.Size {
		t.Fatalf("stored fingerprints = %d, want one of 32 bytes", len(fps))
	}
	stored := fps[0]
	// Candidates: every 15-digit number with the canary's first digits
	// but four, ending in its mask; the true number is among them.
	prefix, mask := canaryAccount[:7], canaryAccount[len(canaryAccount)-4:]
	tried, found := 0, false
	for i := 0; i < 10000; i++ {
		number := fmt.Sprintf("%s%04d%s", prefix, i, mask)
		if len(number) != len(canaryAccount) {
			t.Fatalf("candidate %q", number)
		}
		found = found || number == canaryAccount
		cand := []byte(manualBody(number, goodRouting))
		plain := sha256.Sum256(cand)
		for _, h := range [][]byte{plain[:], unkeyedV1([]byte("POST"), []byte("/v1/accounts"), cand)} {
			if bytes.Equal(h, stored) {
				t.Fatalf("an unkeyed hash of the body of %s matches the stored fingerprint", number)
			}
		}
		tried++
	}
	if !found || tried != 10000 {
		t.Fatal("the true account number was not among the candidates")
	}

	// Replay still works; another body under the key is still 422.
	status, h, again := keyedCall(t, nil, "POST", url, alice, "acct-key-1", body)
	if status != 201 || again != first || h.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay = %d %s (%v), want the first answer replayed", status, again, h)
	}
	status, _, reused := keyedCall(t, nil, "POST", url, alice, "acct-key-1", manualBody("12345678", goodRouting))
	mustError(t, status, reused, 422, "idempotency_key_reused")

	// The same body by another caller, or under another key, is another
	// fingerprint: equal bodies cannot be told apart in the table.
	status, _, out := keyedCall(t, nil, "POST", url, bob, "acct-key-1", body)
	want(t, status, 201, out, nil)
	status, _, out = keyedCall(t, nil, "POST", url, alice, "acct-key-2", body)
	mustError(t, status, out, 409, "conflict") // the duplicate entry, stored like any answer
	fps = fingerprints(t, ve.Env)
	if len(fps) != 3 || bytes.Equal(fps[0], fps[1]) || bytes.Equal(fps[0], fps[2]) || bytes.Equal(fps[1], fps[2]) {
		t.Fatalf("fingerprints of one body by two callers and two keys: %x, want three different", fps)
	}
	if strings.Contains(pgDump(t, ve.DBURL), canaryAccount) {
		t.Fatal("the account number is in the database")
	}
}

// brokenMACs stands for system keys that cannot be had.
type brokenMACs struct{}

func (brokenMACs) MAC(string, ...[]byte) ([]byte, error) {
	return nil, errors.New("system key not loaded")
}

// Without the idempotency key there is no claim and no weaker hash: a POST
// with an Idempotency-Key fails closed, 503 with Retry-After, and runs
// nothing; one without a key is served.
func TestIdempotencyFailsClosedWithoutItsSystemKey(t *testing.T) {
	var things *api.Things
	env := apitest.Start(t, func(d *api.Deps) {
		things = api.WithThings(d)
		d.MACs = brokenMACs{}
	})
	url, alice := env.Public.URL+"/v1/test/things", jwttest.Token(t, jwttest.WithSubject("usr_alice"))
	a := idemPost(t, url, alice, "k-closed", `{"name":"lamp"}`)
	mustError(t, a.status, a.body, 503, "unavailable")
	if s, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("503 without Retry-After: %v", a.header)
	}
	if things.Created.Load() != 0 {
		t.Fatal("the request ran without its idempotency claim")
	}
	var rows int
	if err := env.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM idempotency_keys`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("idempotency rows = %d (%v), want none", rows, err)
	}
	if b := idemPost(t, url, alice, "-", `{"name":"lamp"}`); b.status != 201 {
		t.Fatalf("without a key = %d %s, want 201", b.status, b.body)
	}
}

// A staff request about a subject stores its answer (the subject's
// pseudonym, the reason) and fingerprint tied to that subject: erasure
// deletes them with the rest of the subject's data.
func TestStaffRequestsStoredAnswersAreErasedWithTheirSubject(t *testing.T) {
	ce := startCompliance(t)
	gone := makeSubjectData(t, ce.Env, "user_fp_erase")
	staffA, staffB := staff(t, "staff_fp_a"), staff(t, "staff_fp_b")
	base := ce.Internal.URL + "/compliance/v1"
	status, _, body := keyedCall(t, ce.console, "POST", base+"/legal-holds", staffA, "hold-1", `{"subject_id":"user_fp_erase","reason":"CASE-FP-1"}`)
	if status != 201 {
		t.Fatalf("hold = %d %s", status, body)
	}
	holdID := decode[struct {
		ID string `json:"id"`
	}](t, body).ID
	if status, body = ce.call(t, "DELETE", "/legal-holds/"+holdID, staffA, ""); status != 204 {
		t.Fatalf("lift = %d %s", status, body)
	}
	status, _, body = keyedCall(t, ce.console, "POST", base+"/erasure-requests", staffA, "erase-1", `{"subject_id":"user_fp_erase","reason":"TICKET-FP-1"}`)
	if status != 201 {
		t.Fatalf("request = %d %s", status, body)
	}
	era := decode[erasureBody](t, body)
	count := func(where string, args ...any) int {
		t.Helper()
		var n int
		if err := ce.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM idempotency_keys WHERE `+where, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(`subject_id = $1 AND status = 'done'`, gone.subjectID); n != 2 {
		t.Fatalf("stored answers tied to the subject = %d, want the hold's and the erasure request's", n)
	}
	status, _, body = keyedCall(t, ce.console, "POST", base+"/erasure-requests/"+era.ID+"/approve", staffB, "approve-1", "")
	if status != 200 || decode[erasureBody](t, body).Status != "completed" {
		t.Fatalf("approve = %d %s", status, body)
	}
	if n := count(`true`); n != 1 {
		t.Fatalf("idempotency rows after the erasure = %d, want 1 (the approval's: its receipt holds no personal data)", n)
	}
	if n := count(`subject_id IS NOT NULL`); n != 0 {
		t.Fatalf("rows still tied to a subject = %d", n)
	}
}
