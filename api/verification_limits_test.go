package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/verification"
)

// failRound starts a micro-deposit verification of the account and spends
// its three attempts on wrong answers, as an attacker who cannot see the
// deposits would (the test reads them only to be sure the guess is wrong).
func (ve *verifyEnv) failRound(t *testing.T, tok, accountID string) {
	t.Helper()
	v := ve.start(t, tok, accountID, "micro_deposits", 201)
	amounts := ve.deposits(t, tok, v.ID)
	for want := 2; want >= 0; want-- {
		status, body := ve.confirm(t, tok, v.ID, wrongAmounts(amounts))
		if left := mismatchLeft(t, status, body); left != want {
			t.Fatalf("attempts_remaining = %d, want %d", left, want)
		}
	}
}

// lockedUntil checks a 409 verification_locked and returns its locked_until.
func lockedUntil(t *testing.T, status int, body string) time.Time {
	t.Helper()
	mustError(t, status, body, 409, verification.CodeLocked)
	var e struct {
		Error struct {
			LockedUntil time.Time `json:"locked_until"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.LockedUntil.IsZero() {
		t.Fatalf("verification_locked without locked_until: %s", body)
	}
	return e.Error.LockedUntil
}

// The attack of issue 11: start, three wrong answers, failed, restart, over
// and over. The third start is refused, and so is every other way to
// micro-deposits of the same number for that user, until the lockout passes.
func TestRestartingMicroDepositsIsLockedAfterTwoFailedVerifications(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_limits_1")
	a := ve.manualAccount(t, tok, canaryAccount)
	ve.failRound(t, tok, a.ID)
	ve.failRound(t, tok, a.ID)

	path := "/v1/accounts/" + a.ID + "/verifications"
	for round, method := range []string{"micro_deposits", "micro_deposits", "auto"} {
		status, body := ve.call(t, "POST", path, tok, `{"method":"`+method+`"}`)
		until := lockedUntil(t, status, body)
		if d := until.Sub(ve.clock.Now()); d < 29*24*time.Hour || d > 30*24*time.Hour+time.Minute {
			t.Fatalf("round %d: locked for %s, want the 30-day lockout", round+3, d)
		}
	}
	// The same number entered again under another routing number is the
	// same guess: locked too.
	status, body := ve.call(t, "POST", "/v1/accounts", tok, manualBody(canaryAccount, "011000015"))
	var again accountBody
	want(t, status, 201, body, &again)
	status, body = ve.call(t, "POST", "/v1/accounts/"+again.ID+"/verifications", tok, `{"method":"micro_deposits"}`)
	lockedUntil(t, status, body)
	if n := ve.count(t, `SELECT count(*) FROM verifications`); n != 2 {
		t.Fatalf("verifications = %d, want the 2 that failed: a refused start leaves nothing", n)
	}
	if n := ve.count(t, `SELECT count(*) FROM audit_entries WHERE action = 'verification.started'`); n != 2 {
		t.Fatalf("started audit entries = %d, want 2", n)
	}

	// The lock lifts once the lockout has passed.
	ve.clock.Advance(30*24*time.Hour + time.Minute)
	v := ve.start(t, tok, a.ID, "micro_deposits", 201)
	if v.Status != "posted" {
		t.Fatalf("after the lockout: %+v", v)
	}
}

func TestFiftyConcurrentStartsOnALockedAccountAreAllRefused(t *testing.T) {
	ve := startVerify(t)
	tok := userToken(t, "user_limits_2")
	a := ve.manualAccount(t, tok, "24680246")
	ve.failRound(t, tok, a.ID)
	v := ve.start(t, tok, a.ID, "micro_deposits", 201)
	amounts := ve.deposits(t, tok, v.ID)
	for i := 0; i < 2; i++ {
		status, body := ve.confirm(t, tok, v.ID, wrongAmounts(amounts))
		mismatchLeft(t, status, body)
	}
	// The last wrong answer races fifty starts: whichever order they take,
	// no start gets through, neither while the verification is open (409
	// conflict) nor once it has failed (409 verification_locked).
	var n sync.WaitGroup
	n.Add(1)
	go func() {
		defer n.Done()
		status, body := ve.confirm(t, tok, v.ID, wrongAmounts(amounts))
		if status != 422 {
			t.Errorf("last wrong answer = %d %s", status, body)
		}
	}()
	statuses := race(t, 50, func() int {
		status, _ := ve.call(t, "POST", "/v1/accounts/"+a.ID+"/verifications", tok, `{"method":"micro_deposits"}`)
		return status
	})
	n.Wait()
	if statuses[409] != 50 {
		t.Fatalf("starts racing the failure = %v, want 50 × 409", statuses)
	}
	// Now locked: fifty starts at once, all refused as locked.
	statuses = race(t, 50, func() int {
		status, body := ve.call(t, "POST", "/v1/accounts/"+a.ID+"/verifications", tok, `{"method":"micro_deposits"}`)
		if status == 409 && !strings.Contains(body, `"code":"verification_locked"`) {
			return 0 // a 409 of another kind: counted apart
		}
		return status
	})
	if statuses[409] != 50 {
		t.Fatalf("answers = %v, want 50 × 409 verification_locked", statuses)
	}
	if n := ve.count(t, `SELECT count(*) FROM verifications WHERE account_id = $1`, a.ID); n != 2 {
		t.Fatalf("verifications = %d, want 2", n)
	}
	if n := ve.count(t, `SELECT count(*) FROM verification_failures WHERE account_id = $1`, a.ID); n != 2 {
		t.Fatalf("failures = %d, want exactly 2", n)
	}
}

// Several attacker accounts share the guessing of one account number in
// parallel: across users the number takes at most 6 failures (counting the
// verifications still open), then starts are 429 account_number_velocity
// with Retry-After; and no one user adds more than 2.
func TestAttackersSharingOneAccountNumberHitTheVelocityLimit(t *testing.T) {
	ve := startVerify(t)
	const attackers = 4
	type result struct {
		failed, velocity, locked int
	}
	results := make([]result, attackers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < attackers; i++ {
		tok := userToken(t, fmt.Sprintf("user_attacker_%d", i))
		a := ve.manualAccount(t, tok, canaryAccount)
		wg.Add(1)
		go func(i int, tok, accountID string) {
			defer wg.Done()
			<-start
			for round := 0; round < 4; round++ {
				status, h, body := apitest.Do(t, nil, "POST", ve.Public.URL+"/v1/accounts/"+accountID+"/verifications", tok,
					"application/json", `{"method":"micro_deposits"}`)
				switch status {
				case 201:
				case 429:
					mustErrorReason(t, status, body, 429, "rate_limited", verification.CodeNumberVelocity)
					if s, err := strconv.Atoi(h.Get("Retry-After")); err != nil || s < 1 {
						t.Errorf("429 without a Retry-After: %q", h.Get("Retry-After"))
					}
					results[i].velocity++
					return
				case 409:
					mustError(t, status, body, 409, verification.CodeLocked)
					results[i].locked++
					return
				default:
					t.Errorf("start = %d %s", status, body)
					return
				}
				var v verificationBody
				if err := json.Unmarshal([]byte(body), &v); err != nil {
					t.Error(err)
					return
				}
				amounts := ve.deposits(t, tok, v.ID)
				for n := 0; n < 3; n++ {
					status, body := ve.confirm(t, tok, v.ID, wrongAmounts(amounts))
					if status != 422 {
						t.Errorf("wrong answer = %d %s", status, body)
						return
					}
				}
				results[i].failed++
			}
		}(i, tok, a.ID)
	}
	close(start)
	wg.Wait()
	total, velocity := 0, 0
	for i, r := range results {
		if r.failed > verification.LockAfterFailures {
			t.Errorf("attacker %d failed %d verifications, want at most %d", i, r.failed, verification.LockAfterFailures)
		}
		total += r.failed
		velocity += r.velocity
	}
	if total != verification.DefaultNumberFailures || velocity == 0 {
		t.Fatalf("results = %+v: %d failures and %d velocity refusals, want exactly %d failures and some refusals",
			results, total, velocity, verification.DefaultNumberFailures)
	}
	if n := ve.count(t, `SELECT count(*) FROM verification_failures WHERE number_index IS NOT NULL`); n != verification.DefaultNumberFailures {
		t.Fatalf("recorded failures of the number = %d, want %d", n, verification.DefaultNumberFailures)
	}
	// The price (docs/SECURITY.md): the owner of the number cannot use
	// micro-deposits for it either until the failures age out.
	owner := userToken(t, "user_owner")
	mine := ve.manualAccount(t, owner, canaryAccount)
	status, h, body := apitest.Do(t, nil, "POST", ve.Public.URL+"/v1/accounts/"+mine.ID+"/verifications", owner,
		"application/json", `{"method":"micro_deposits"}`)
	mustErrorReason(t, status, body, 429, "rate_limited", verification.CodeNumberVelocity)
	if s, err := strconv.Atoi(h.Get("Retry-After")); err != nil || s < 29*24*3600 || s > 30*24*3600+60 {
		t.Fatalf("Retry-After = %q, want about the 30-day lockout", h.Get("Retry-After"))
	}
	ve.clock.Advance(30*24*time.Hour + time.Minute)
	ve.start(t, owner, mine.ID, "micro_deposits", 201)
}

func TestInstantVerificationStaysOpenOnALockedAccount(t *testing.T) {
	ve := startVerify(t)
	be := &bankEnv{Env: ve.Env}
	tok := userToken(t, "user_limits_4")
	item := be.linkSandbox(t, tok, "ins_sandbox")
	id := item.Accounts[0].ID
	ve.failRound(t, tok, id)
	ve.failRound(t, tok, id)
	status, body := ve.call(t, "POST", "/v1/accounts/"+id+"/verifications", tok, `{"method":"micro_deposits"}`)
	lockedUntil(t, status, body)
	v := ve.start(t, tok, id, "instant", 201)
	if v.Method != "instant" || v.Status != "verified" {
		t.Fatalf("instant on a locked account = %+v, want verified", v)
	}
}

// The per-user limits on manual accounts and on verification starts hold
// exactly under concurrency, and one user's spending leaves another's.
func TestPerUserLimitsOnManualAccountsAndVerificationStarts(t *testing.T) {
	ve := startVerifyEnv(t, true)
	tok := userToken(t, "user_limits_5")
	var mu sync.Mutex
	retryAfter := []string{}
	i := 0
	statuses := race(t, 50, func() int {
		mu.Lock()
		i++
		number := fmt.Sprintf("4455%06d", i)
		mu.Unlock()
		status, h, body := apitest.Do(t, nil, "POST", ve.Public.URL+"/v1/accounts", tok, "application/json", manualBody(number, goodRouting))
		if status == 429 {
			mustError(t, status, body, 429, "rate_limited")
			mu.Lock()
			retryAfter = append(retryAfter, h.Get("Retry-After"))
			mu.Unlock()
		}
		return status
	})
	// One user's entries are serialized (manual.go), so on a loaded
	// machine some of the 20 admitted may pass their deadline (503): the
	// limit is what is checked, exactly 20 admitted and 30 refused.
	if statuses[429] != 30 || statuses[201]+statuses[503] != 20 {
		t.Fatalf("manual accounts = %v, want 20 admitted and 30 × 429", statuses)
	}
	for _, ra := range retryAfter {
		if s, err := strconv.Atoi(ra); err != nil || s < 1 {
			t.Fatalf("429 with Retry-After %q", ra)
		}
	}
	if n := ve.count(t, `SELECT count(*) FROM accounts`); n != statuses[201] {
		t.Fatalf("accounts = %d, want the %d created", n, statuses[201])
	}
	other := userToken(t, "user_limits_5b")
	a := ve.manualAccount(t, other, "55443322")
	statuses = race(t, 50, func() int {
		status, _ := ve.call(t, "POST", "/v1/accounts/"+a.ID+"/verifications", other, `{"method":"micro_deposits"}`)
		return status
	})
	if statuses[429] != 30 || statuses[201] > 1 || statuses[201]+statuses[409]+statuses[503] != 20 {
		t.Fatalf("starts = %v, want 20 admitted (at most one started, the rest 409: one is open) and 30 × 429", statuses)
	}
	if status, _ := ve.call(t, "POST", "/v1/accounts", userToken(t, "user_limits_5c"), manualBody("66554433", goodRouting)); status != http.StatusCreated {
		t.Fatalf("another user's manual account = %d, want 201", status)
	}
}
