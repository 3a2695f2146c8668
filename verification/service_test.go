package verification_test

import (
	"context"
	"crypto/rand"
	"slices"
	"sync"
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/sandbox"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault/vaulttest"
	"github.com/kluis-dev/kluis/verification"
	"github.com/kluis-dev/kluis/verification/sandboxrail"
)

// verifyEnv is verification over a real database (the serving role), a
// working vault, bank linking's side of the Accounts port, and the sandbox
// rail posting deposits at once: no HTTP.
type verifyEnv struct {
	db       *postgres.DB
	vault    vaulttest.Vault
	auditor  *audit.Auditor
	accounts *banklink.AccountStore
	rail     *sandboxrail.Rail
	svc      *verification.Service
}

func newVerifyEnv(t *testing.T) *verifyEnv {
	t.Helper()
	db, _ := pgtest.Open(t)
	v := vaulttest.OpenWithKeys(t, db, slices.Concat(banklink.SystemKeys(), verification.SystemKeys()),
		slices.Concat(banklink.CredentialKinds(), verification.CredentialKinds())...)
	e := &verifyEnv{db: db, vault: v, auditor: audit.NewAuditor(db, v.System, nil), accounts: banklink.NewAccountStore(db),
		rail: sandboxrail.New(db, v.System, 0, nil)}
	var err error
	e.svc, err = verification.New(verification.Options{DB: db, Vault: v.Store, Auditor: e.auditor, Keys: v.System,
		Accounts: e.accounts, Rail: e.rail})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func usAccount(number string) verification.ManualAccount {
	return verification.ManualAccount{AccountNumber: number, RoutingNumber: "021000021", AccountType: verification.TypeChecking, HolderName: "Ada Lovelace"}
}

// manual enters a US account by hand for actor.
func (e *verifyEnv) manual(t *testing.T, actor audit.Actor, number string) verification.Account {
	t.Helper()
	a, err := e.svc.CreateManualAccount(context.Background(), actor, usAccount(number))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// accountStatus reads the account's verification status through the port.
func (e *verifyEnv) accountStatus(t *testing.T, a verification.Account) string {
	t.Helper()
	got, err := e.accounts.Account(context.Background(), e.db.Pool, a.ID, a.SubjectID)
	if err != nil {
		t.Fatal(err)
	}
	return got.VerificationStatus
}

// startPosted starts micro-deposits on the account and returns the
// verification, posted, with the amounts the sandbox bank shows the user.
func (e *verifyEnv) startPosted(t *testing.T, actor audit.Actor, a verification.Account) (verification.Verification, []int) {
	t.Helper()
	ctx := context.Background()
	v, err := e.svc.Start(ctx, actor, a.ID, verification.MethodMicroDeposits)
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != verification.StatusPosted {
		t.Fatalf("verification is %s, want posted", v.Status)
	}
	d, err := e.rail.Posted(ctx, v.RailRef)
	if err != nil {
		t.Fatal(err)
	}
	return v, d.AmountsCents
}

// wrong is an answer that is not the amounts.
func wrong(amounts []int) verification.Answer {
	return verification.Answer{Amounts: []int{amounts[0]%99 + 1, amounts[1]}}
}

func TestAManualAccountIsEnteredOnceThroughTheAccountsPort(t *testing.T) {
	e := newVerifyEnv(t)
	ctx := context.Background()
	actor := audit.User("user_vf_manual", "req_1")
	a := e.manual(t, actor, "0001234567")
	got, err := e.accounts.Account(ctx, e.db.Pool, a.ID, a.SubjectID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ItemID != "" || got.Mask != "4567" || got.Country != verification.CountryUS || got.AccountNumberRef != a.AccountNumberRef ||
		got.VerificationStatus != verification.AccountUnverified || got.Revoked {
		t.Fatalf("the port reads %+v", got)
	}
	// The same account again is a conflict naming the first; the same
	// number at another bank, or for another user, is another account.
	_, err = e.svc.CreateManualAccount(ctx, actor, usAccount("0001234567"))
	var kerr *kluis.Error
	if kluis.ErrorCode(err) != kluis.EConflict || !asError(err, &kerr) || kerr.Fields["account_id"] != a.ID {
		t.Fatalf("a duplicate: %v", err)
	}
	other := usAccount("0001234567")
	other.RoutingNumber = "011000015"
	if _, err := e.svc.CreateManualAccount(ctx, actor, other); err != nil {
		t.Fatalf("another bank: %v", err)
	}
	b := e.manual(t, audit.User("user_vf_manual_b", "req_2"), "0001234567")
	// Each user reads only their own account.
	if _, err := e.accounts.Account(ctx, e.db.Pool, a.ID, b.SubjectID); kluis.ErrorCode(err) != kluis.ENotFound {
		t.Fatalf("another subject's account: %v", err)
	}
	if _, err := e.accounts.Account(ctx, e.db.Pool, a.ID, ""); kluis.ErrorCode(err) != kluis.ENotFound {
		t.Fatalf("an empty subject: %v", err)
	}
	if _, err := e.svc.Start(ctx, audit.User("user_vf_manual_b", "req_3"), a.ID, verification.MethodMicroDeposits); kluis.ErrorCode(err) != kluis.ENotFound {
		t.Fatalf("verifying another user's account: %v", err)
	}
	// Concurrent entries of one new account make one.
	n := 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.svc.CreateManualAccount(ctx, actor, usAccount("0009876543"))
		}()
	}
	wg.Wait()
	created := 0
	for _, err := range errs {
		switch kluis.ErrorCode(err) {
		case "":
			created++
		case kluis.EConflict:
		default:
			t.Fatalf("a concurrent entry: %v", err)
		}
	}
	if created != 1 {
		t.Fatalf("concurrent entries made %d accounts", created)
	}
}

func asError(err error, target **kluis.Error) bool {
	for err != nil {
		if k, ok := err.(*kluis.Error); ok {
			*target = k
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func TestMicroDepositsVerifyTheAccountWithTheRightAnswer(t *testing.T) {
	e := newVerifyEnv(t)
	ctx := context.Background()
	actor := audit.User("user_vf_micro", "req_1")
	a := e.manual(t, actor, "0001111111")
	v, amounts := e.startPosted(t, actor, a)
	if e.accountStatus(t, a) != verification.AccountPending {
		t.Fatalf("account is %s while deposits are out", e.accountStatus(t, a))
	}
	// A second verification of the same account is refused while one is open.
	if _, err := e.svc.Start(ctx, actor, a.ID, verification.MethodMicroDeposits); kluis.ErrorCode(err) != kluis.EConflict {
		t.Fatalf("a second start: %v", err)
	}
	_, err := e.svc.Confirm(ctx, actor, v.ID, wrong(amounts))
	var kerr *kluis.Error
	if kluis.ErrorCode(err) != verification.CodeMismatch || !asError(err, &kerr) || kerr.Fields["attempts_remaining"] != 2 {
		t.Fatalf("a wrong answer: %v", err)
	}
	// Another user's confirm finds nothing.
	if _, err := e.svc.Confirm(ctx, audit.User("user_vf_micro_b", "req_x"), v.ID, verification.Answer{Amounts: amounts}); kluis.ErrorCode(err) != kluis.ENotFound {
		t.Fatalf("another user's confirm: %v", err)
	}
	got, err := e.svc.Confirm(ctx, actor, v.ID, verification.Answer{Amounts: []int{amounts[1], amounts[0]}})
	if err != nil || got.Status != verification.StatusVerified || got.AttemptsRemaining != 2 {
		t.Fatalf("the right answer: %+v, %v", got, err)
	}
	if e.accountStatus(t, a) != verification.AccountVerified {
		t.Fatalf("account is %s", e.accountStatus(t, a))
	}
	if _, err := e.svc.Confirm(ctx, actor, v.ID, verification.Answer{Amounts: amounts}); kluis.ErrorCode(err) != kluis.EConflict {
		t.Fatalf("a confirm after verified: %v", err)
	}
	if _, err := e.svc.Start(ctx, actor, a.ID, verification.MethodAuto); kluis.ErrorCode(err) != kluis.EConflict {
		t.Fatalf("a start on a verified account: %v", err)
	}
}

func TestSpentAttemptsFailTheVerificationAndFailuresLockTheAccount(t *testing.T) {
	e := newVerifyEnv(t)
	ctx := context.Background()
	actor := audit.User("user_vf_lock", "req_1")
	a := e.manual(t, actor, "0002222222")
	for round := 1; round <= verification.LockAfterFailures; round++ {
		v, amounts := e.startPosted(t, actor, a)
		for left := verification.DefaultAttempts - 1; left >= 0; left-- {
			_, err := e.svc.Confirm(ctx, actor, v.ID, wrong(amounts))
			var kerr *kluis.Error
			if kluis.ErrorCode(err) != verification.CodeMismatch || !asError(err, &kerr) || kerr.Fields["attempts_remaining"] != left {
				t.Fatalf("round %d, wrong answer with %d left: %v", round, left, err)
			}
		}
		got, err := e.svc.Get(ctx, actor.Name, v.ID)
		if err != nil || got.Status != verification.StatusFailed || got.AttemptsRemaining != 0 {
			t.Fatalf("round %d: %+v, %v", round, got, err)
		}
		// The right answer is too late now.
		if _, err := e.svc.Confirm(ctx, actor, v.ID, verification.Answer{Amounts: amounts}); kluis.ErrorCode(err) != kluis.EConflict {
			t.Fatalf("round %d, the right answer after failing: %v", round, err)
		}
		if e.accountStatus(t, a) != verification.AccountFailed {
			t.Fatalf("round %d: account is %s", round, e.accountStatus(t, a))
		}
	}
	if _, err := e.svc.Start(ctx, actor, a.ID, verification.MethodMicroDeposits); kluis.ErrorCode(err) != verification.CodeLocked {
		t.Fatalf("a start after %d failures: %v", verification.LockAfterFailures, err)
	}
	// The same number entered under another account of the user is locked
	// too (the lock follows the number).
	other := usAccount("0002222222")
	other.RoutingNumber = "011000015"
	b, err := e.svc.CreateManualAccount(ctx, actor, other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Start(ctx, actor, b.ID, verification.MethodMicroDeposits); kluis.ErrorCode(err) != verification.CodeLocked {
		t.Fatalf("the same number under another account: %v", err)
	}
}

// Many goroutines answering at once spend exactly the attempts there are:
// every attempt is one conditional UPDATE that never goes below zero.
func TestConcurrentConfirmsCannotOverspendAttempts(t *testing.T) {
	e := newVerifyEnv(t)
	ctx := context.Background()
	actor := audit.User("user_vf_race", "req_1")
	a := e.manual(t, actor, "0003333333")
	v, amounts := e.startPosted(t, actor, a)
	const n = 24
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = e.svc.Confirm(ctx, actor, v.ID, wrong(amounts))
		}()
	}
	close(start)
	wg.Wait()
	left := map[any]int{}
	for _, err := range errs {
		var kerr *kluis.Error
		switch kluis.ErrorCode(err) {
		case verification.CodeMismatch:
			if !asError(err, &kerr) {
				t.Fatal(err)
			}
			left[kerr.Fields["attempts_remaining"]]++
		case kluis.EConflict:
		default:
			t.Fatalf("a concurrent confirm: %v", err)
		}
	}
	if len(left) != verification.DefaultAttempts || left[2] != 1 || left[1] != 1 || left[0] != 1 {
		t.Fatalf("attempts spent: %v, want each of 2, 1, 0 once", left)
	}
	got, err := e.svc.Get(ctx, actor.Name, v.ID)
	if err != nil || got.Status != verification.StatusFailed || got.AttemptsRemaining != 0 {
		t.Fatalf("after the race: %+v, %v", got, err)
	}

	// Right answers at once verify once; the rest are conflicts.
	b := e.manual(t, actor, "0004444444")
	v, amounts = e.startPosted(t, actor, b)
	verified := 0
	var mu sync.Mutex
	start = make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := e.svc.Confirm(ctx, actor, v.ID, verification.Answer{Amounts: amounts})
			mu.Lock()
			defer mu.Unlock()
			switch kluis.ErrorCode(err) {
			case "":
				verified++
			case kluis.EConflict:
			default:
				t.Errorf("a concurrent right answer: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if verified != 1 || e.accountStatus(t, b) != verification.AccountVerified {
		t.Fatalf("verified %d times; account %s", verified, e.accountStatus(t, b))
	}
}

// A linked account is read through the port with its item's provider: the
// sandbox's auth numbers prove it at once, and once the item is removed
// the account is gone for verification too.
func TestALinkedAccountVerifiesInstantlyThroughThePortUntilItsItemIsRemoved(t *testing.T) {
	e := newVerifyEnv(t)
	ctx := context.Background()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	sb, err := sandbox.New(sandbox.Options{DB: e.db, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	bank, err := banklink.New(banklink.Options{DB: e.db, Vault: e.vault.Store, Auditor: e.auditor, Provider: sb, Keys: e.vault.System})
	if err != nil {
		t.Fatal(err)
	}
	actor := audit.User("user_vf_linked", "req_1")
	ls, err := bank.CreateLinkSession(ctx, actor, nil, "", "")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := bank.SandboxPublicToken(ctx, actor, ls.ID, banklink.SandboxLink{InstitutionID: sandbox.InstitutionAuth,
		Username: sandbox.GoodUsername, Password: sandbox.GoodPassword})
	if err != nil {
		t.Fatal(err)
	}
	it, _, err := bank.Exchange(ctx, actor, ls.ID, tok)
	if err != nil || len(it.Accounts) < 2 {
		t.Fatalf("exchange: %d accounts, %v", len(it.Accounts), err)
	}
	provider, status, err := e.accounts.ItemProvider(ctx, it.ID)
	if err != nil || provider != sandbox.Name || status != banklink.ItemActive {
		t.Fatalf("ItemProvider = %s, %s, %v", provider, status, err)
	}
	first := it.Accounts[0]
	v, err := e.svc.Start(ctx, actor, first.ID, verification.MethodAuto)
	if err != nil || v.Method != verification.MethodInstant || v.Status != verification.StatusVerified {
		t.Fatalf("instant: %+v, %v", v, err)
	}
	if got, err := e.accounts.Account(ctx, e.db.Pool, first.ID, it.SubjectID); err != nil || got.VerificationStatus != verification.AccountVerified {
		t.Fatalf("account after instant: %+v, %v", got, err)
	}
	if _, err := bank.DeleteItem(ctx, actor, it.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.accounts.ItemProvider(ctx, it.ID); kluis.ErrorCode(err) != kluis.ENotFound {
		t.Fatalf("a removed item's provider: %v", err)
	}
	if _, err := e.svc.Start(ctx, actor, it.Accounts[1].ID, verification.MethodAuto); kluis.ErrorCode(err) != kluis.ENotFound {
		t.Fatalf("verifying a removed item's account: %v", err)
	}
}
