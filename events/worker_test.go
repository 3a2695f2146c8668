package events

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
)

var testSecret = []byte("whsec-test-0123456789abcdef0123456789")

// receiver is an app endpoint for tests: it checks every signature and
// counts the events it accepted, by id.
type receiver struct {
	t    *testing.T
	srv  *httptest.Server
	mu   sync.Mutex
	got  map[string]int
	hits atomic.Int64
	// answer decides the status of the n-th request (from 1).
	answer func(n int64, r *http.Request) int
}

func newReceiver(t *testing.T, answer func(n int64, r *http.Request) int) *receiver {
	t.Helper()
	rc := &receiver{t: t, got: map[string]int{}, answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	n := rc.hits.Add(1)
	body, _ := io.ReadAll(r.Body)
	if err := VerifySignature(testSecret, r.Header.Get(SignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
		rc.t.Errorf("delivery with a bad signature: %v", err)
		w.WriteHeader(400)
		return
	}
	var p Payload
	if err := json.Unmarshal(body, &p); err != nil || p.ID == "" || p.ID != r.Header.Get("Kluis-Event-Id") {
		rc.t.Errorf("delivery body %s", body)
	}
	status := 200
	if rc.answer != nil {
		status = rc.answer(n, r)
	}
	if status < 300 {
		rc.mu.Lock()
		rc.got[p.ID]++
		rc.mu.Unlock()
	}
	w.WriteHeader(status)
}

func (rc *receiver) count(id string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.got[id]
}

// enqueue writes an event about a user of the default app.
func enqueue(t *testing.T, db *postgres.DB, typ string, data map[string]string) string {
	t.Helper()
	return enqueueFor(t, db, "user-1", typ, data)
}

// enqueueFor writes an event about the user whose user key
// (kluis.UserKey) is user, creating the subject if need be.
func enqueueFor(t *testing.T, db *postgres.DB, user, typ string, data map[string]string) string {
	t.Helper()
	var id string
	err := db.InTx(context.Background(), func(tx pgx.Tx) error {
		sub, err := vault.EnsureSubject(context.Background(), tx, user)
		if err != nil {
			return err
		}
		id, err = Enqueue(context.Background(), tx, Event{Subject: sub, Type: typ, Data: data})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

const verID = "ver_abcdefghijklmnopqrstuvwxyz234567"

func newWorker(t *testing.T, db *postgres.DB, urls []string, adjust ...func(*WorkerOptions)) *Worker {
	t.Helper()
	o := WorkerOptions{DB: db, Endpoints: urls, Secret: testSecret, BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		Interval: 5 * time.Millisecond, Lease: 200 * time.Millisecond}
	for _, a := range adjust {
		a(&o)
	}
	w, err := NewWorker(o)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// until ticks w until cond holds, failing after a few seconds.
func until(t *testing.T, w *Worker, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in time")
		}
		if _, err := w.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func deliveries(t *testing.T, db *postgres.DB, eventID, outcome string) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox_deliveries WHERE event_id = $1 AND outcome = $2`,
		eventID, outcome).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEveryEndpointGetsEveryEventOnceWithAValidSignature(t *testing.T) {
	db, _ := pgtest.Open(t)
	a, b := newReceiver(t, nil), newReceiver(t, nil)
	ids := []string{
		enqueue(t, db, VerificationPosted, map[string]string{"verification_id": verID, "status": "posted"}),
		enqueue(t, db, VerificationVerified, map[string]string{"verification_id": verID, "status": "verified"}),
		enqueue(t, db, ItemLoginRequired, map[string]string{"item_id": "itm_abcdefghijklmnopqrstuvwxyz234567", "status": "login_required"}),
	}
	w := newWorker(t, db, []string{a.srv.URL + "/hooks?token=abc", b.srv.URL})
	until(t, w, func() bool {
		return a.count(ids[2]) == 1 && b.count(ids[2]) == 1 && a.count(ids[0]) == 1 && b.count(ids[1]) == 1
	})
	for i := 0; i < 5; i++ {
		if _, err := w.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		if a.count(id) != 1 || b.count(id) != 1 {
			t.Fatalf("event %s delivered %d and %d times, want once each", id, a.count(id), b.count(id))
		}
		if n := deliveries(t, db, id, "delivered"); n != 2 {
			t.Fatalf("recorded deliveries of %s = %d, want 2", id, n)
		}
	}
	var stored int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox_targets WHERE endpoint LIKE '%token%'`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != 0 {
		t.Fatal("an endpoint's query (which may hold a token) is stored")
	}
}

func TestAReceiverThatFailsForAWhileGetsTheEventWhenItRecovers(t *testing.T) {
	db, _ := pgtest.Open(t)
	rc := newReceiver(t, func(n int64, _ *http.Request) int {
		if n <= 4 {
			return 503
		}
		return 204
	})
	id := enqueue(t, db, VerificationFailed, map[string]string{"verification_id": verID, "status": "failed"})
	w := newWorker(t, db, []string{rc.srv.URL})
	until(t, w, func() bool { return rc.count(id) == 1 })
	if f, d := deliveries(t, db, id, "failed"), deliveries(t, db, id, "delivered"); f != 4 || d != 1 {
		t.Fatalf("recorded attempts: %d failed, %d delivered; want 4 and 1", f, d)
	}
	var attempts []int
	rows, _ := db.Pool.Query(context.Background(), `SELECT attempt FROM outbox_deliveries WHERE event_id = $1 ORDER BY id`, id)
	attempts, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range attempts {
		if a != i+1 {
			t.Fatalf("attempt numbers = %v, want 1..5", attempts)
		}
	}
}

func TestAStoppedWorkerResumesFromTheOutbox(t *testing.T) {
	db, _ := pgtest.Open(t)
	release := make(chan struct{})
	rc := newReceiver(t, func(n int64, r *http.Request) int {
		if n == 1 {
			// The first delivery hangs until its worker is stopped.
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return 500
		}
		return 200
	})
	defer close(release)
	id := enqueue(t, db, VerificationExpired, map[string]string{"verification_id": verID, "status": "expired"})

	ctx, stop := context.WithCancel(context.Background())
	first := newWorker(t, db, []string{rc.srv.URL})
	go first.Run(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for rc.hits.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	stop() // the instance goes away mid-delivery
	<-first.Done()
	if rc.count(id) != 0 {
		t.Fatal("delivered before the restart")
	}
	later := enqueue(t, db, VerificationPosted, map[string]string{"verification_id": verID, "status": "posted"})

	ctx2, stop2 := context.WithCancel(context.Background())
	defer stop2()
	second := newWorker(t, db, []string{rc.srv.URL})
	go second.Run(ctx2)
	deadline = time.Now().Add(10 * time.Second)
	for (rc.count(id) == 0 || rc.count(later) == 0) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if rc.count(id) != 1 || rc.count(later) != 1 {
		t.Fatalf("after the restart: %d and %d deliveries, want one each", rc.count(id), rc.count(later))
	}
}

func TestWorkersOnSeveralInstancesDeliverEachEventOnce(t *testing.T) {
	db, _ := pgtest.Open(t)
	rc := newReceiver(t, nil)
	var ids []string
	for i := 0; i < 30; i++ {
		ids = append(ids, enqueue(t, db, VerificationPosted, map[string]string{"verification_id": verID, "status": "posted"}))
	}
	ctx, stop := context.WithCancel(context.Background())
	var workers []*Worker
	for i := 0; i < 3; i++ {
		// The production lease (one minute), not the 200 ms the other tests
		// use to see an expired lease retried. This test is about instances
		// sharing the work without overlap, which the lease guarantees only
		// while an attempt (claim, post, record) fits in it; under -race on a
		// busy machine one took over 200 ms (its record waited on the pool),
		// the lease ran out and a second instance delivered the event again:
		// the documented at-least-once retry after an expired lease, not
		// overlapping claims. Nothing here needs the lease to expire: every
		// answer is a 2xx, and a failed attempt's backoff replaces the lease.
		w := newWorker(t, db, []string{rc.srv.URL}, func(o *WorkerOptions) { o.Batch = 4; o.Lease = time.Minute })
		workers = append(workers, w)
		go w.Run(ctx)
	}
	deadline := time.Now().Add(10 * time.Second)
	done := func() bool {
		for _, id := range ids {
			if rc.count(id) == 0 {
				return false
			}
		}
		return true
	}
	for !done() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	for _, w := range workers {
		<-w.Done()
	}
	for _, id := range ids {
		if rc.count(id) != 1 {
			rows, _ := db.Pool.Query(context.Background(), `SELECT attempt || ' ' || outcome || ' at ' || attempted_at::text
				FROM outbox_deliveries WHERE event_id = $1 ORDER BY id`, id)
			recorded, _ := pgx.CollectRows(rows, pgx.RowTo[string])
			t.Fatalf("event %s delivered %d times, want once (recorded attempts: %v)", id, rc.count(id), recorded)
		}
	}
}

func TestDeliveryIsGivenUpAfterTheRetryPeriod(t *testing.T) {
	db, _ := pgtest.Open(t)
	rc := newReceiver(t, func(int64, *http.Request) int { return 500 })
	var id string
	err := db.InTx(context.Background(), func(tx pgx.Tx) error {
		sub, err := vault.EnsureSubject(context.Background(), tx, "user-1")
		if err != nil {
			return err
		}
		id, err = Enqueue(context.Background(), tx, Event{Subject: sub, Type: VerificationPosted, OccurredAt: time.Now().Add(-25 * time.Hour),
			Data: map[string]string{"verification_id": verID, "status": "posted"}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	w := newWorker(t, db, []string{rc.srv.URL}, func(o *WorkerOptions) { o.RetryFor = 24 * time.Hour })
	if _, err := w.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	var status string
	if err := db.Pool.QueryRow(context.Background(), `SELECT status FROM outbox_targets WHERE event_id = $1`, id).Scan(&status); err != nil {
		t.Fatal(err)
	}
	if status != "dead" {
		t.Fatalf("status = %q after the retry period, want dead", status)
	}
}

func TestBackoffDoublesWithJitterUpToTheCap(t *testing.T) {
	t.Parallel()
	w := &Worker{opts: WorkerOptions{BaseBackoff: 30 * time.Second, MaxBackoff: time.Hour}}
	cases := []struct {
		attempt int
		lo, hi  time.Duration
	}{
		{1, 15 * time.Second, 30 * time.Second},
		{2, 30 * time.Second, time.Minute},
		{5, 4 * time.Minute, 8 * time.Minute},
		{8, 30 * time.Minute, time.Hour},
		{40, 30 * time.Minute, time.Hour},
	}
	for _, tc := range cases {
		for i := 0; i < 50; i++ {
			if d := w.backoff(tc.attempt); d < tc.lo || d > tc.hi {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", tc.attempt, d, tc.lo, tc.hi)
			}
		}
	}
	// Even at the low end of the jitter, 60 attempts span more than 24
	// hours: a receiver that is down for a day still gets the event.
	var total time.Duration
	for a := 1; a <= 60; a++ {
		total += w.backoff(a)
	}
	if total < 24*time.Hour {
		t.Fatalf("60 attempts span %s, want more than 24h", total)
	}
}

func TestEnqueueRefusesAnythingButIdentifiersAndStatuses(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		e    Event
	}{
		{"an unknown type", Event{Type: "verification.amounts", Data: map[string]string{"status": "posted"}}},
		{"an account number", Event{Type: VerificationPosted, Data: map[string]string{"account": "987650432109876"}}},
		{"amounts", Event{Type: VerificationPosted, Data: map[string]string{"amounts": "12,34"}}},
		{"free text", Event{Type: VerificationPosted, Data: map[string]string{"note": "Thandi Nkosi"}}},
		{"a token", Event{Type: ItemRevoked, Data: map[string]string{"token": "access-sandbox-123"}}},
		{"a key that is not a word", Event{Type: ItemRevoked, Data: map[string]string{"Item-ID": "revoked"}}},
	}
	for _, tc := range cases {
		if err := tc.e.Validate(); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	ok := Event{Type: ItemRevoked, Data: map[string]string{"item_id": "itm_abcdefghijklmnopqrstuvwxyz234567", "status": "revoked"}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("a valid event refused: %v", err)
	}
}

func TestSignatures(t *testing.T) {
	t.Parallel()
	body := []byte(`{"id":"evt_x"}`)
	now := time.Unix(1700000000, 0)
	h := Sign(testSecret, now.Unix(), body)
	cases := []struct {
		name   string
		header string
		body   []byte
		at     time.Time
		ok     bool
	}{
		{"a good signature verifies", h, body, now, true},
		{"a second v1 (rotation) is accepted", h + ",v1=00", body, now, true},
		{"a changed body does not", h, []byte(`{"id":"evt_y"}`), now, false},
		{"an old timestamp does not", h, body, now.Add(10 * time.Minute), false},
		{"another secret's does not", Sign([]byte("other"), now.Unix(), body), body, now, false},
		{"no header does not", "", body, now, false},
		{"garbage does not", "t=abc,v1=zz", body, now, false},
	}
	for _, tc := range cases {
		err := VerifySignature(testSecret, tc.header, tc.body, tc.at, 5*time.Minute)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
}
