package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/sandbox"
	"github.com/kluis-dev/kluis/events"
	"github.com/kluis-dev/kluis/jobs"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
	"github.com/kluis-dev/kluis/verification/sandboxrail"
)

// testClock is a clock the test moves.
type testClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().UTC().Add(c.off)
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

// verifyEnv is kluis with bank linking on the sandbox provider and
// verification on the sandbox rail, under a clock the test moves.
type verifyEnv struct {
	*apitest.Env
	svc   *verification.Service
	rail  *sandboxrail.Rail
	clock *testClock
}

// startVerify starts it; adjust changes the verification options.
func startVerify(t *testing.T, adjust ...func(*verification.Options)) *verifyEnv {
	t.Helper()
	return startVerifyEnv(t, false, adjust...)
}

// startVerifyEnv is startVerify; with limited, every default rate limit
// applies, the per-user ones on verification routes too.
func startVerifyEnv(t *testing.T, limited bool, adjust ...func(*verification.Options)) *verifyEnv {
	t.Helper()
	return startVerifyWith(t, limited, nil, adjust...)
}

// startVerifyWith is startVerifyEnv with further options for the listeners
// (run after bank linking and verification are in Deps).
func startVerifyWith(t *testing.T, limited bool, envOpts []apitest.Option, adjust ...func(*verification.Options)) *verifyEnv {
	t.Helper()
	ve := &verifyEnv{clock: &testClock{}}
	ve.Env = apitest.Start(t, append([]apitest.Option{func(d *api.Deps) {
		keys := d.Pseudonyms.(*vault.SystemKeys)
		sb, err := sandbox.New(sandbox.Options{DB: d.DB, Secret: sandboxSecret})
		if err != nil {
			t.Fatal(err)
		}
		bank, err := banklink.New(banklink.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Provider: sb, Keys: keys, Logger: d.Logger})
		if err != nil {
			t.Fatal(err)
		}
		d.BankLink = bank
		ve.rail = sandboxrail.New(d.DB, keys, 0, ve.clock)
		opts := verification.Options{DB: d.DB, Vault: d.Vault, Auditor: d.Auditor, Accounts: banklink.NewAccountStore(d.DB), Keys: keys, Rail: ve.rail,
			Clock: ve.clock, Logger: d.Logger}
		for _, a := range adjust {
			a(&opts)
		}
		ve.svc, err = verification.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		d.Verification = ve.svc
		// The concurrency tests race answers on purpose: the per-user
		// limit on confirmations (tested with the rate limits) is off.
		limits := api.DefaultRateLimits()
		if !limited {
			// So do the tests of the verification limits, which start
			// more than the per-user limits allow.
			delete(limits.Operations, api.OpVerificationConfirm)
			delete(limits.Operations, api.OpVerificationStart)
			delete(limits.Operations, api.OpManualAccount)
		}
		d.RateLimits = &limits
	}}, envOpts...)...)
	return ve
}

func (ve *verifyEnv) call(t *testing.T, method, path, token, body string) (int, string) {
	t.Helper()
	ct := ""
	if body != "" {
		ct = "application/json"
	}
	status, _, resp := apitest.Do(t, nil, method, ve.Public.URL+path, token, ct, body)
	return status, resp
}

const (
	canaryAccount = "987650432109876" // 15 digits, found nowhere else
	goodRouting   = "021000021"
)

type verificationBody struct {
	ID                string    `json:"id"`
	AccountID         string    `json:"account_id"`
	Method            string    `json:"method"`
	AnswerKind        string    `json:"answer_kind"`
	Status            string    `json:"status"`
	AttemptsRemaining int       `json:"attempts_remaining"`
	ExpiresAt         time.Time `json:"expires_at"`
}

func manualBody(number, routing string) string {
	return fmt.Sprintf(`{"account_number":%q,"routing_number":%q,"account_type":"checking","holder_name":"Thandi Nkosi"}`, number, routing)
}

func (ve *verifyEnv) manualAccount(t *testing.T, tok, number string) accountBody {
	t.Helper()
	status, resp := ve.call(t, "POST", "/v1/accounts", tok, manualBody(number, goodRouting))
	var a accountBody
	want(t, status, 201, resp, &a)
	return a
}

func (ve *verifyEnv) start(t *testing.T, tok, accountID, method string, wantStatus int) verificationBody {
	t.Helper()
	status, resp := ve.call(t, "POST", "/v1/accounts/"+accountID+"/verifications", tok, `{"method":"`+method+`"}`)
	var v verificationBody
	want(t, status, wantStatus, resp, &v)
	return v
}

func (ve *verifyEnv) deposits(t *testing.T, tok, id string) []int {
	t.Helper()
	status, resp := ve.call(t, "GET", "/v1/sandbox/verifications/"+id+"/deposits", tok, "")
	var d struct {
		Amounts []int `json:"amounts"`
	}
	want(t, status, 200, resp, &d)
	if len(d.Amounts) != 2 {
		t.Fatalf("deposits = %v, want two amounts", d.Amounts)
	}
	for _, a := range d.Amounts {
		if a < 1 || a > 99 {
			t.Fatalf("deposit of %d cents, want 1 to 99", a)
		}
	}
	return d.Amounts
}

func amountsBody(a, b int) string { return fmt.Sprintf(`{"amounts":[%d,%d]}`, a, b) }

// wrongAmounts returns a pair that differs from the right one.
func wrongAmounts(right []int) string {
	a := right[0]%99 + 1
	return amountsBody(a, right[1])
}

func (ve *verifyEnv) confirm(t *testing.T, tok, id, body string) (int, string) {
	t.Helper()
	return ve.call(t, "POST", "/v1/verifications/"+id+"/confirm", tok, body)
}

func (ve *verifyEnv) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := ve.DB.Pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (ve *verifyEnv) events(t *testing.T, typ, verificationID string) int {
	t.Helper()
	return ve.count(t, `SELECT count(*) FROM outbox WHERE type = $1 AND payload->'data'->>'verification_id' = $2`, typ, verificationID)
}

func mismatchLeft(t *testing.T, status int, body string) int {
	t.Helper()
	mustError(t, status, body, 422, verification.CodeMismatch)
	var e struct {
		Error struct {
			AttemptsRemaining *int `json:"attempts_remaining"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.AttemptsRemaining == nil {
		t.Fatalf("mismatch without attempts_remaining: %s", body)
	}
	return *e.Error.AttemptsRemaining
}

func TestManualAccountIsVerifiedByMicroDepositsAfterAWrongAnswer(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_verify_1")
	a := ve.manualAccount(t, tok, canaryAccount)
	if !strings.HasPrefix(a.ID, "acc_") || a.Mask != "9876" || a.VerificationStatus != "unverified" ||
		a.Subtype != "checking" || a.ItemID != "" {
		t.Fatalf("manual account = %+v", a)
	}
	v := ve.start(t, tok, a.ID, "micro_deposits", 201)
	if !strings.HasPrefix(v.ID, "ver_") || v.Method != "micro_deposits" || v.Status != "posted" || v.AttemptsRemaining != 3 ||
		v.AnswerKind != "amounts" || v.AccountID != a.ID {
		t.Fatalf("verification = %+v", v)
	}
	if d := v.ExpiresAt.Sub(ve.clock.Now()); d < 9*24*time.Hour || d > 10*24*time.Hour+time.Minute {
		t.Fatalf("expires in %s, want the 10-day window", d)
	}
	amounts := ve.deposits(t, tok, v.ID)

	status, body := ve.confirm(t, tok, v.ID, wrongAmounts(amounts))
	if left := mismatchLeft(t, status, body); left != 2 {
		t.Fatalf("attempts_remaining = %d after one wrong answer, want 2", left)
	}
	// The order of the amounts does not matter.
	status, body = ve.confirm(t, tok, v.ID, amountsBody(amounts[1], amounts[0]))
	var got verificationBody
	want(t, status, 200, body, &got)
	if got.Status != "verified" || got.AttemptsRemaining != 2 {
		t.Fatalf("after the right answer: %+v", got)
	}
	status, body = ve.call(t, "GET", "/v1/accounts/"+a.ID, tok, "")
	var acc accountBody
	want(t, status, 200, body, &acc)
	if acc.VerificationStatus != "verified" {
		t.Fatalf("account verification_status = %q, want verified", acc.VerificationStatus)
	}
	if n := ve.events(t, "verification.posted", v.ID); n != 1 {
		t.Fatalf("posted events = %d, want 1", n)
	}
	if n := ve.events(t, "verification.verified", v.ID); n != 1 {
		t.Fatalf("verified events = %d, want 1", n)
	}
	for action, wantN := range map[string]int{"verification.started": 1, "verification.sent": 1, "verification.posted": 1,
		"verification.attempt_failed": 1, "verification.verified": 1} {
		if n := ve.count(t, `SELECT count(*) FROM audit_entries WHERE action = $1 AND target = $2`, action, v.ID); n != wantN {
			t.Fatalf("audit entries %s = %d, want %d", action, n, wantN)
		}
	}
	// Answering again after success is a conflict, and a new verification
	// of a verified account too.
	status, body = ve.confirm(t, tok, v.ID, amountsBody(amounts[0], amounts[1]))
	mustError(t, status, body, 409, "conflict")
	status, body = ve.call(t, "POST", "/v1/accounts/"+a.ID+"/verifications", tok, `{"method":"micro_deposits"}`)
	mustError(t, status, body, 409, "conflict")
}

func TestThreeWrongAnswersFailTheVerificationAndTheRightOneAfterIsAConflict(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_verify_2")
	a := ve.manualAccount(t, tok, "12345678")
	v := ve.start(t, tok, a.ID, "auto", 201)
	if v.Method != "micro_deposits" {
		t.Fatalf("auto on a manual account chose %q, want micro_deposits", v.Method)
	}
	amounts := ve.deposits(t, tok, v.ID)
	for want := 2; want >= 0; want-- {
		status, body := ve.confirm(t, tok, v.ID, wrongAmounts(amounts))
		if left := mismatchLeft(t, status, body); left != want {
			t.Fatalf("attempts_remaining = %d, want %d", left, want)
		}
	}
	status, body := ve.confirm(t, tok, v.ID, amountsBody(amounts[0], amounts[1]))
	mustError(t, status, body, 409, "conflict")
	status, body = ve.call(t, "GET", "/v1/verifications/"+v.ID, tok, "")
	var got verificationBody
	want(t, status, 200, body, &got)
	if got.Status != "failed" || got.AttemptsRemaining != 0 {
		t.Fatalf("after three wrong answers: %+v", got)
	}
	if n := ve.events(t, "verification.failed", v.ID); n != 1 {
		t.Fatalf("failed events = %d, want 1", n)
	}
	// A failed verification frees the account for a new one.
	v2 := ve.start(t, tok, a.ID, "micro_deposits", 201)
	if v2.ID == v.ID || v2.Status != "posted" {
		t.Fatalf("new verification = %+v", v2)
	}
}

func TestTheExpiryJobExpiresAVerificationPastItsWindow(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_verify_3")
	a := ve.manualAccount(t, tok, "55554444")
	v := ve.start(t, tok, a.ID, "micro_deposits", 201)
	amounts := ve.deposits(t, tok, v.ID)

	sched := jobs.New(ve.DB, ve.Deps.Auditor, nil, jobs.Options{Clock: ve.clock})
	if err := sched.Register(jobs.Job{Name: verification.JobExpiry, Schedule: "@every 1h", Run: func(ctx context.Context, run *jobs.Run) error {
		n, err := ve.svc.ExpireDue(ctx)
		run.Set("expired", int64(n))
		return err
	}}); err != nil {
		t.Fatal(err)
	}
	run := func() int64 {
		t.Helper()
		res, err := sched.RunNow(context.Background(), verification.JobExpiry)
		if err != nil {
			t.Fatal(err)
		}
		return res.Counts["expired"]
	}
	ve.clock.Advance(10*24*time.Hour - time.Minute)
	if n := run(); n != 0 {
		t.Fatalf("expired %d inside the window", n)
	}
	ve.clock.Advance(2 * time.Minute)
	if n := run(); n != 1 {
		t.Fatalf("expired %d past the window, want 1", n)
	}
	status, body := ve.call(t, "GET", "/v1/verifications/"+v.ID, tok, "")
	var got verificationBody
	want(t, status, 200, body, &got)
	if got.Status != "expired" {
		t.Fatalf("status = %q, want expired", got.Status)
	}
	status, body = ve.confirm(t, tok, v.ID, amountsBody(amounts[0], amounts[1]))
	mustError(t, status, body, 409, "conflict")
	if n := ve.events(t, "verification.expired", v.ID); n != 1 {
		t.Fatalf("expired events = %d, want 1", n)
	}
	if n := ve.count(t, `SELECT count(*) FROM audit_entries WHERE action = 'verification.expired' AND target = $1 AND actor_kind = 'system'`, v.ID); n != 1 {
		t.Fatalf("expiry audit entries = %d, want 1", n)
	}
	if n := run(); n != 0 {
		t.Fatalf("a second run expired %d more", n)
	}
}

func TestAnAnswerPastTheWindowExpiresTheVerification(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_verify_3b")
	a := ve.manualAccount(t, tok, "55554445")
	v := ve.start(t, tok, a.ID, "micro_deposits", 201)
	amounts := ve.deposits(t, tok, v.ID)
	ve.clock.Advance(10*24*time.Hour + time.Second)
	status, body := ve.confirm(t, tok, v.ID, amountsBody(amounts[0], amounts[1]))
	mustError(t, status, body, 409, "conflict")
	if n := ve.events(t, "verification.expired", v.ID); n != 1 {
		t.Fatalf("expired events = %d, want 1", n)
	}
}

func TestLinkedAccountsVerifyInstantlyWhereTheInstitutionSupportsAuth(t *testing.T) {
	ve := startVerify(t)
	be := &bankEnv{Env: ve.Env}
	tok := userToken(t, "user_verify_4")

	auth := be.linkSandbox(t, tok, "ins_sandbox")
	if len(auth.Accounts) == 0 {
		t.Fatal("the sandbox item has no accounts")
	}
	v := ve.start(t, tok, auth.Accounts[0].ID, "auto", 201)
	if v.Method != "instant" || v.Status != "verified" {
		t.Fatalf("auto at ins_sandbox: %+v, want instant and verified", v)
	}
	status, body := ve.call(t, "GET", "/v1/accounts/"+auth.Accounts[0].ID, tok, "")
	var acc accountBody
	want(t, status, 200, body, &acc)
	if acc.VerificationStatus != "verified" {
		t.Fatalf("account = %+v, want verified", acc)
	}
	if n := ve.events(t, "verification.verified", v.ID); n != 1 {
		t.Fatalf("verified events = %d, want 1", n)
	}

	noauth := be.linkSandbox(t, tok, "ins_sandbox_noauth")
	id := noauth.Accounts[0].ID
	status, body = ve.call(t, "POST", "/v1/accounts/"+id+"/verifications", tok, `{"method":"instant"}`)
	mustError(t, status, body, 422, verification.CodeInstantUnsupported)
	v = ve.start(t, tok, id, "auto", 201)
	if v.Method != "micro_deposits" || v.Status != "posted" {
		t.Fatalf("auto at ins_sandbox_noauth: %+v, want micro_deposits, posted", v)
	}
	amounts := ve.deposits(t, tok, v.ID)
	status, body = ve.confirm(t, tok, v.ID, amountsBody(amounts[0], amounts[1]))
	var got verificationBody
	want(t, status, 200, body, &got)
	if got.Status != "verified" {
		t.Fatalf("after the right answer: %+v", got)
	}
}

func TestFiftyConcurrentWrongAnswersSpendAtMostThreeAttempts(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_verify_5")
	a := ve.manualAccount(t, tok, "11112222")
	v := ve.start(t, tok, a.ID, "micro_deposits", 201)
	amounts := ve.deposits(t, tok, v.ID)
	statuses := race(t, 50, func() int {
		status, _ := ve.confirm(t, tok, v.ID, wrongAmounts(amounts))
		return status
	})
	if statuses[422] != 3 || statuses[409] != 47 {
		t.Fatalf("answers = %v, want 3 mismatches and 47 conflicts", statuses)
	}
	if n := ve.count(t, `SELECT count(*) FROM audit_entries WHERE action = 'verification.attempt_failed' AND target = $1`, v.ID); n != 2 {
		t.Fatalf("attempts spent without failing = %d, want 2", n)
	}
	if n := ve.count(t, `SELECT count(*) FROM verifications WHERE id = $1 AND status = 'failed' AND attempts_remaining = 0`, v.ID); n != 1 {
		t.Fatal("the verification did not end failed with 0 attempts")
	}
	if n := ve.events(t, "verification.failed", v.ID); n != 1 {
		t.Fatalf("failed events = %d, want 1", n)
	}
	if n := ve.count(t, `SELECT count(*) FROM verification_failures WHERE verification_id = $1 AND account_id = $2`, v.ID, a.ID); n != 1 {
		t.Fatalf("failures recorded = %d, want exactly 1", n)
	}
}

func TestFiftyConcurrentRightAnswersVerifyExactlyOnce(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_verify_6")
	a := ve.manualAccount(t, tok, "33334444")
	v := ve.start(t, tok, a.ID, "micro_deposits", 201)
	amounts := ve.deposits(t, tok, v.ID)
	statuses := race(t, 50, func() int {
		status, _ := ve.confirm(t, tok, v.ID, amountsBody(amounts[0], amounts[1]))
		return status
	})
	if statuses[200] < 1 || statuses[200]+statuses[409] != 50 {
		t.Fatalf("answers = %v, want 200s and 409s only", statuses)
	}
	if n := ve.count(t, `SELECT count(*) FROM audit_entries WHERE action = 'verification.verified' AND target = $1`, v.ID); n != 1 {
		t.Fatalf("transitions to verified = %d, want 1", n)
	}
	if n := ve.events(t, "verification.verified", v.ID); n != 1 {
		t.Fatalf("verified events = %d, want 1", n)
	}
}

// race runs fn n times at once and counts the statuses it returns.
func race(t *testing.T, n int, fn func() int) map[int]int {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	counts := map[int]int{}
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			s := fn()
			mu.Lock()
			counts[s]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	return counts
}

func TestManualAccountInputIsChecked(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_verify_7")
	cases := []struct {
		name, body string
		status     int
		code       string
	}{
		{"an account number of three digits", manualBody("123", goodRouting), 400, "invalid_request"},
		{"an account number of eighteen digits", manualBody("123456789012345678", goodRouting), 400, "invalid_request"},
		{"an account number with a letter", manualBody("1234a678", goodRouting), 400, "invalid_request"},
		{"a routing number with a bad check digit", manualBody("12345678", "021000022"), 400, "invalid_request"},
		{"a routing number of eight digits", manualBody("12345678", "02100002"), 400, "invalid_request"},
		{"a routing number outside the Federal Reserve prefixes", manualBody("12345678", "990000004"), 400, "invalid_request"},
		{"an account type that is neither checking nor savings", `{"account_number":"12345678","routing_number":"021000021","account_type":"brokerage","holder_name":"A"}`, 400, "invalid_request"},
		{"no holder name", `{"account_number":"12345678","routing_number":"021000021","account_type":"savings","holder_name":"  "}`, 400, "invalid_request"},
		{"a holder name too long", `{"account_number":"12345678","routing_number":"021000021","account_type":"savings","holder_name":"` + strings.Repeat("x", 129) + `"}`, 400, "invalid_request"},
		{"an unknown field", `{"account_number":"12345678","routing_number":"021000021","account_type":"savings","holder_name":"A","ssn":"1"}`, 400, "invalid_request"},
		{"a number as a JSON number", `{"account_number":12345678,"routing_number":"021000021","account_type":"savings","holder_name":"A"}`, 400, "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := ve.call(t, "POST", "/v1/accounts", tok, tc.body)
			mustError(t, status, body, tc.status, tc.code)
			if strings.Contains(body, "12345678") || strings.Contains(body, "021000") {
				t.Fatalf("the error echoes the input: %s", body)
			}
		})
	}
	first := ve.manualAccount(t, tok, "0001234567")
	status, body := ve.call(t, "POST", "/v1/accounts", tok, manualBody("0001234567", goodRouting))
	mustError(t, status, body, 409, "conflict")
	if !strings.Contains(body, first.ID) {
		t.Fatalf("the duplicate's conflict does not name the existing account: %s", body)
	}
	// The same number at another bank, or for another user, is another account.
	status, body = ve.call(t, "POST", "/v1/accounts", tok, manualBody("0001234567", "011000015"))
	want(t, status, 201, body, nil)
	status, body = ve.call(t, "POST", "/v1/accounts", userToken(t, "user_verify_7b"), manualBody("0001234567", goodRouting))
	want(t, status, 201, body, nil)
}

func TestVerificationsOfAnotherUserAnswerAsUnknownOnes(t *testing.T) {
	ve := startVerify(t)
	owner, other := userToken(t, "user_verify_8"), userToken(t, "user_verify_8b")
	a := ve.manualAccount(t, owner, "77778888")
	v := ve.start(t, owner, a.ID, "micro_deposits", 201)
	_ = ve.manualAccount(t, other, "77778889")
	unknown := "ver_" + strings.Repeat("a", 32)
	for _, path := range []string{"/v1/verifications/%s", "/v1/sandbox/verifications/%s/deposits"} {
		s1, b1 := ve.call(t, "GET", fmt.Sprintf(path, v.ID), other, "")
		s2, b2 := ve.call(t, "GET", fmt.Sprintf(path, unknown), other, "")
		if s1 != 404 || s2 != 404 || withoutRequestID(b1) != withoutRequestID(b2) {
			t.Fatalf("%s: other's %d %s, unknown %d %s", path, s1, b1, s2, b2)
		}
	}
	s1, b1 := ve.confirm(t, other, v.ID, `{"amounts":[1,2]}`)
	s2, b2 := ve.confirm(t, other, unknown, `{"amounts":[1,2]}`)
	if s1 != 404 || s2 != 404 || withoutRequestID(b1) != withoutRequestID(b2) {
		t.Fatalf("confirm: other's %d %s, unknown %d %s", s1, b1, s2, b2)
	}
	status, body := ve.call(t, "POST", "/v1/accounts/"+a.ID+"/verifications", other, `{"method":"auto"}`)
	mustError(t, status, body, 404, "not_found")
	if n := ve.count(t, `SELECT attempts_remaining FROM verifications WHERE id = $1`, v.ID); n != 3 {
		t.Fatalf("another user's answer spent an attempt: %d left", n)
	}
}

func TestConfirmBeforeTheDepositsPostIsAConflict(t *testing.T) {
	// A rail that posts a day after sending.
	ve := startVerify(t, func(o *verification.Options) {
		o.Rail = sandboxrail.New(o.DB, o.Keys, 24*time.Hour, o.Clock)
	})
	tok := userToken(t, "user_verify_9")
	a := ve.manualAccount(t, tok, "24681357")
	v := ve.start(t, tok, a.ID, "micro_deposits", 201)
	if v.Status != "sent" {
		t.Fatalf("status = %q, want sent", v.Status)
	}
	status, body := ve.call(t, "GET", "/v1/sandbox/verifications/"+v.ID+"/deposits", tok, "")
	mustError(t, status, body, 409, "conflict")
	status, body = ve.confirm(t, tok, v.ID, `{"amounts":[1,2]}`)
	mustError(t, status, body, 409, "conflict")
	if n := ve.count(t, `SELECT attempts_remaining FROM verifications WHERE id = $1`, v.ID); n != 3 {
		t.Fatalf("an answer before posting spent an attempt: %d left", n)
	}
	ve.clock.Advance(25 * time.Hour)
	res, err := ve.svc.PollRail(context.Background())
	if err != nil || res.Posted != 1 {
		t.Fatalf("poll = %+v, %v; want one posted", res, err)
	}
	amounts := ve.deposits(t, tok, v.ID)
	status, body = ve.confirm(t, tok, v.ID, amountsBody(amounts[0], amounts[1]))
	want(t, status, 200, body, nil)
}

func TestReturnedDepositsEndTheVerification(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_verify_10")
	a := ve.manualAccount(t, tok, "13572468")
	v := ve.start(t, tok, a.ID, "micro_deposits", 201)
	status, body := ve.call(t, "POST", "/v1/sandbox/verifications/"+v.ID+"/return", tok, "")
	want(t, status, 202, body, nil)
	res, err := ve.svc.PollRail(context.Background())
	if err != nil || res.Returned != 1 {
		t.Fatalf("poll = %+v, %v; want one returned", res, err)
	}
	status, body = ve.call(t, "GET", "/v1/verifications/"+v.ID, tok, "")
	var got verificationBody
	want(t, status, 200, body, &got)
	if got.Status != "returned" {
		t.Fatalf("status = %q, want returned", got.Status)
	}
	status, body = ve.confirm(t, tok, v.ID, `{"amounts":[1,2]}`)
	mustError(t, status, body, 409, "conflict")
	if n := ve.events(t, "verification.returned", v.ID); n != 1 {
		t.Fatalf("returned events = %d, want 1", n)
	}
}

func TestCodeDepositsAreConfirmedByTheirCode(t *testing.T) {
	ve := startVerify(t, func(o *verification.Options) { o.AnswerKind = verification.AnswerCode })
	tok := userToken(t, "user_verify_11")
	a := ve.manualAccount(t, tok, "98761234")
	v := ve.start(t, tok, a.ID, "micro_deposits", 201)
	if v.AnswerKind != "code" {
		t.Fatalf("answer_kind = %q, want code", v.AnswerKind)
	}
	status, body := ve.call(t, "GET", "/v1/sandbox/verifications/"+v.ID+"/deposits", tok, "")
	var d struct {
		Amounts []int  `json:"amounts"`
		Code    string `json:"code"`
	}
	want(t, status, 200, body, &d)
	if len(d.Amounts) != 1 || len(d.Code) != 6 {
		t.Fatalf("deposits = %+v, want one amount and a six-character code", d)
	}
	status, body = ve.confirm(t, tok, v.ID, `{"amounts":[1,2]}`)
	mustError(t, status, body, 400, "invalid_request")
	status, body = ve.confirm(t, tok, v.ID, `{"code":"ZZZZZZ"}`)
	if d.Code != "ZZZZZZ" {
		if left := mismatchLeft(t, status, body); left != 2 {
			t.Fatalf("attempts_remaining = %d, want 2", left)
		}
	}
	status, body = ve.confirm(t, tok, v.ID, `{"code":"`+strings.ToLower(d.Code)+`"}`)
	want(t, status, 200, body, nil)
	dump := pgDump(t, ve.DBURL)
	if strings.Contains(dump, d.Code) || strings.Contains(ve.Logs.String(), d.Code) {
		t.Fatal("the code is in the database dump or the logs")
	}
}

// TestNoSecretLeavesThroughResponsesLogsOrTheDatabase runs the whole flow
// with a canary account number and checks every answer but the sandbox
// deposits route, the logs, and a dump of the database.
func TestNoSecretLeavesThroughResponsesLogsOrTheDatabase(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_verify_12")
	var bodies []string
	do := func(method, path, body string) (int, string) {
		status, resp := ve.call(t, method, path, tok, body)
		bodies = append(bodies, resp)
		return status, resp
	}
	status, resp := do("POST", "/v1/accounts", manualBody(canaryAccount, goodRouting))
	var a accountBody
	want(t, status, 201, resp, &a)
	do("POST", "/v1/accounts", manualBody(canaryAccount, goodRouting)) // the duplicate's 409
	do("POST", "/v1/accounts", manualBody(canaryAccount+"99", goodRouting))
	status, resp = do("POST", "/v1/accounts/"+a.ID+"/verifications", `{"method":"auto"}`)
	var v verificationBody
	want(t, status, 201, resp, &v)
	amounts := ve.deposits(t, tok, v.ID) // the one route allowed to show them
	do("POST", "/v1/verifications/"+v.ID+"/confirm", wrongAmounts(amounts))
	do("GET", "/v1/verifications/"+v.ID, "")
	do("POST", "/v1/verifications/"+v.ID+"/confirm", amountsBody(amounts[0], amounts[1]))
	do("GET", "/v1/accounts", "")
	do("GET", "/v1/accounts/"+a.ID, "")

	lo, hi := min(amounts[0], amounts[1]), max(amounts[0], amounts[1])
	secrets := []string{canaryAccount, "Thandi", goodRouting, fmt.Sprintf("%d,%d", lo, hi), fmt.Sprintf("%d,%d", hi, lo), `"amounts":`}
	for _, b := range bodies {
		for _, s := range secrets {
			if strings.Contains(b, s) {
				t.Fatalf("a response carries %q: %s", s, b)
			}
		}
	}
	logs := ve.Logs.String()
	dump := pgDump(t, ve.DBURL)
	for _, s := range secrets[:5] {
		if strings.Contains(logs, s) {
			t.Fatalf("the logs carry %q", s)
		}
		if strings.Contains(dump, s) {
			t.Fatalf("the database dump carries %q", s)
		}
	}
	// Reveal still gives the numbers to a service allowed to see them.
	var ref string
	if err := ve.DB.Pool.QueryRow(context.Background(), `SELECT account_number_ref FROM accounts WHERE id = $1`, a.ID).Scan(&ref); err != nil {
		t.Fatal(err)
	}
	status, _, resp = apitest.Do(t, ve.ServiceClient(t, "payments"), "POST", revealURL(ve.Env, ref), "", "application/json", `{"purpose":"payment_initiation"}`)
	if status != http.StatusOK || !strings.Contains(resp, canaryAccount) || !strings.Contains(resp, goodRouting) {
		t.Fatalf("reveal of the manual account = %d", status)
	}
}

func TestAppEndpointsReceiveVerificationEventsSigned(t *testing.T) {
	secret := []byte("whsec-api-test-0123456789abcdef0123")
	type got struct {
		typ, verificationID string
	}
	var mu sync.Mutex
	var received []got
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := events.VerifySignature(secret, r.Header.Get(events.SignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("event with a bad signature: %v", err)
			w.WriteHeader(400)
			return
		}
		var p events.Payload
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("event body: %v", err)
		}
		for _, s := range []string{canaryAccount, "amounts", "code"} {
			if strings.Contains(string(body), s) {
				t.Errorf("an event carries %q: %s", s, body)
			}
		}
		mu.Lock()
		received = append(received, got{p.Type, p.Data["verification_id"]})
		mu.Unlock()
	}))
	defer rc.Close()
	ve := startVerify(t)
	worker, err := events.NewWorker(events.WorkerOptions{DB: ve.DB, Endpoints: []string{rc.URL}, Secret: secret, Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	go worker.Run(ctx)
	defer func() { stop(); <-worker.Done() }()

	tok := userToken(t, "user_verify_13")
	a := ve.manualAccount(t, tok, canaryAccount)
	v := ve.start(t, tok, a.ID, "micro_deposits", 201)
	amounts := ve.deposits(t, tok, v.ID)
	status, body := ve.confirm(t, tok, v.ID, amountsBody(amounts[0], amounts[1]))
	want(t, status, 200, body, nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(received)
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	// Deliveries run concurrently: the order of arrival is not promised
	// (receivers order by the event's created_at).
	sort.Slice(received, func(i, j int) bool { return received[i].typ < received[j].typ })
	wantEvents := []got{{"verification.posted", v.ID}, {"verification.verified", v.ID}}
	if len(received) != 2 || received[0] != wantEvents[0] || received[1] != wantEvents[1] {
		t.Fatalf("received %v, want %v", received, wantEvents)
	}
}

func TestWithoutARailOnlyInstantVerificationIsOffered(t *testing.T) {
	ve := startVerify(t, func(o *verification.Options) { o.Rail = nil })
	tok := userToken(t, "user_verify_14")
	a := ve.manualAccount(t, tok, "86420864")
	status, body := ve.call(t, "POST", "/v1/accounts/"+a.ID+"/verifications", tok, `{"method":"auto"}`)
	mustError(t, status, body, 422, verification.CodeMicroDepositsUnavailable)
	status, body = ve.call(t, "GET", "/v1/sandbox/verifications/ver_"+strings.Repeat("a", 32)+"/deposits", tok, "")
	mustError(t, status, body, 404, "not_found")
	if n := ve.count(t, `SELECT count(*) FROM verifications`); n != 0 {
		t.Fatalf("%d verifications left behind", n)
	}
}
