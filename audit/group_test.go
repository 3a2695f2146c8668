package audit_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/audit/audittest"
)

func groupEntry(i int) audit.Entry {
	return audit.Entry{ActorKind: audit.ActorService, Actor: "payments", Action: "credential.reveal",
		Target: fmt.Sprintf("cred_%d", i), Outcome: audit.OutcomeSuccess, Subject: fmt.Sprintf("user-%d", i),
		RequestID: "req", Details: map[string]any{"n": i}}
}

// holdFirstCommit makes the group's first commit wait until want callers
// queue behind it, so that the second batch holds all of them whatever the
// scheduler does (no sleep, no timing).
// It returns a channel closed once the first commit has begun.
func holdFirstCommit(g *audit.Group, want int) <-chan struct{} {
	var once sync.Once
	leading := make(chan struct{})
	audit.OnGroupCommit(g, func(int) {
		once.Do(func() {
			close(leading)
			for audit.GroupQueued(g) < want {
				runtime.Gosched()
			}
		})
	})
	return leading
}

// recordAll records entries from one goroutine each and returns each
// caller's error. With leading not nil, the first caller starts alone and
// the rest once its commit has begun (they queue behind it).
func recordAll(g *audit.Group, entries []audit.Entry, leading <-chan struct{}) []error {
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	for i, e := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.Record(context.Background(), e)
		}()
		if i == 0 && leading != nil {
			<-leading
		}
	}
	wg.Wait()
	return errs
}

func TestGroupCommitsCallersThatWaitInOneTransaction(t *testing.T) {
	a, db := audittest.NewAuditor(t)
	g := audit.NewGroup(a, audit.GroupOptions{})
	const callers = 10
	leading := holdFirstCommit(g, callers-1)
	entries := make([]audit.Entry, callers)
	for i := range entries {
		entries[i] = groupEntry(i)
	}
	for i, err := range recordAll(g, entries, leading) {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	var n, txs int
	err := db.Pool.QueryRow(context.Background(), `
		SELECT count(*), count(DISTINCT xmin::text) FROM audit_entries WHERE action = 'credential.reveal'`).Scan(&n, &txs)
	if err != nil {
		t.Fatal(err)
	}
	if n != callers || txs != 2 {
		t.Errorf("%d entries in %d transactions, want %d in 2 (the leader's, then everyone who waited)", n, txs, callers)
	}
	var subject *string
	if err := db.Pool.QueryRow(context.Background(), `SELECT subject_pseudonym FROM audit_entries WHERE target = 'cred_3'`).Scan(&subject); err != nil {
		t.Fatal(err)
	}
	if subject == nil || *subject != a.Pseudonym("user-3") {
		t.Errorf("subject pseudonym = %v, want the keyed pseudonym", subject)
	}
	if _, err := audit.NewSealer(db, 0).SealPending(context.Background()); err != nil {
		t.Fatal(err)
	}
	res, err := audit.Verify(context.Background(), db)
	if err != nil || !res.OK || res.Entries != callers {
		t.Errorf("verify: %+v %v", res, err)
	}
}

// TestOneRefusedEntryCostsNoOtherCallerItsCommit: Postgres refuses an
// entry (a NUL escape jsonb cannot hold) in a shared batch; the batch is
// retried one entry at a time and only that caller fails.
func TestOneRefusedEntryCostsNoOtherCallerItsCommit(t *testing.T) {
	a, db := audittest.NewAuditor(t)
	g := audit.NewGroup(a, audit.GroupOptions{})
	const callers = 6
	leading := holdFirstCommit(g, callers-1)
	entries := make([]audit.Entry, callers)
	for i := range entries {
		entries[i] = groupEntry(i)
	}
	entries[3].Details = map[string]any{"reason": "nul \x00 here"}
	errs := recordAll(g, entries, leading)
	for i, err := range errs {
		if (i == 3) != (err != nil) {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	if kluis.ErrorCode(errs[3]) != kluis.EUnavailable {
		t.Errorf("the refused entry's caller got %v, want unavailable", errs[3])
	}
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM audit_entries`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != callers-1 {
		t.Errorf("%d entries committed, want %d", n, callers-1)
	}
}

// TestAGroupWhoseDatabaseIsGoneFailsEveryCallerAndHangsNone: no caller
// waits forever, and none is told its entry committed.
func TestAGroupWhoseDatabaseIsGoneFailsEveryCallerAndHangsNone(t *testing.T) {
	a, db := audittest.NewAuditor(t)
	g := audit.NewGroup(a, audit.GroupOptions{})
	db.Close()
	entries := make([]audit.Entry, 8)
	for i := range entries {
		entries[i] = groupEntry(i)
	}
	for i, err := range recordAll(g, entries, nil) {
		if kluis.ErrorCode(err) != kluis.EUnavailable {
			t.Errorf("caller %d: %v, want unavailable", i, err)
		}
	}
	// And the group is not stuck: the next caller leads again.
	if err := g.Record(context.Background(), groupEntry(99)); kluis.ErrorCode(err) != kluis.EUnavailable {
		t.Errorf("after: %v", err)
	}
}

func TestAGroupRefusesAnInvalidEntryWithoutQueueingIt(t *testing.T) {
	a, _ := audittest.NewAuditor(t)
	g := audit.NewGroup(a, audit.GroupOptions{})
	e := groupEntry(1)
	e.Outcome = "maybe"
	if err := g.Record(context.Background(), e); kluis.ErrorCode(err) != kluis.EInvalid {
		t.Fatalf("err = %v", err)
	}
	if n := audit.GroupQueued(g); n != 0 {
		t.Errorf("%d queued", n)
	}
}

// TestAPanicInACommitStrandsNoCaller: a leader whose commit panics still
// answers its batch (unavailable) and hands the lead on, so the next caller
// is served.
func TestAPanicInACommitStrandsNoCaller(t *testing.T) {
	a, _ := audittest.NewAuditor(t)
	g := audit.NewGroup(a, audit.GroupOptions{})
	var once sync.Once
	audit.OnGroupCommit(g, func(int) {
		once.Do(func() { panic("commit exploded") })
	})
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the leader's panic did not reach its caller")
			}
		}()
		_ = g.Record(context.Background(), groupEntry(1))
	}()
	if err := g.Record(context.Background(), groupEntry(2)); err != nil {
		t.Fatalf("the next caller: %v", err)
	}
}
