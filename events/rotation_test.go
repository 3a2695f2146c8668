package events

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/apps"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// offsetClock is the system clock moved forward by what the test adds.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

func (c *offsetClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// rotatingReceiver is an app's endpoint that knows one secret at a time
// (the old one, then, after its operators deploy the new one, only that)
// and refuses what does not verify with it. It also checks every delivery
// with both secrets, to say which receivers could have verified it.
type rotatingReceiver struct {
	clock    *offsetClock
	old, new []byte
	knows    atomic.Pointer[[]byte]

	mu        sync.Mutex
	got       map[string]bool
	refused   int
	dual      int // deliveries signed with both secrets
	dualBad   int // of those, any that one secret alone does not verify
	oldAfter  int // deliveries the old secret verifies after it retired
	retiredAt time.Time
}

func (rc *rotatingReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	header := r.Header.Get(SignatureHeader)
	now := rc.clock.Now()
	// The tolerance covers the test's jump of the clock past the old
	// secret's date: a delivery signed just before the jump arrives after
	// it, and its age is the jump, not a replay.
	verifies := func(secret []byte) bool { return VerifySignature(secret, header, body, now, 3*time.Hour) == nil }
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if strings.Count(header, "v1=") == 2 {
		rc.dual++
		if !verifies(rc.old) || !verifies(rc.new) {
			rc.dualBad++
		}
	}
	// Judged by when kluis signed (t=), not when the delivery arrived.
	if !rc.retiredAt.IsZero() && signedAt(header) >= rc.retiredAt.Unix() && verifies(rc.old) {
		rc.oldAfter++
	}
	if !verifies(*rc.knows.Load()) {
		rc.refused++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rc.got[r.Header.Get("Kluis-Event-Id")] = true
}

// signedAt is the t= of a Kluis-Signature header.
func signedAt(header string) int64 {
	var t int64
	for _, part := range strings.Split(header, ",") {
		if v, ok := strings.CutPrefix(part, "t="); ok {
			_, _ = fmt.Sscan(v, &t)
		}
	}
	return t
}

func (rc *rotatingReceiver) received() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.got)
}

// writeApps writes an apps file with one endpoint signed by secrets
// (file:retire_at, the date empty for none).
func writeApps(t *testing.T, path, url string, secrets ...string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "apps:\n  shop:\n    jwt: {issuer: https://id.example, audience: shop}\n    events:\n      endpoints:\n        - id: main\n          url: %s\n          secrets:\n", url)
	for _, s := range secrets {
		file, retire, _ := strings.Cut(s, "|")
		fmt.Fprintf(&b, "            - file: %s\n", file)
		if retire != "" {
			fmt.Fprintf(&b, "              retire_at: %s\n", retire)
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestASecretRotationUnderAStreamOfEventsLosesNothingAndEveryDeliveryVerifies(t *testing.T) {
	db, _ := pgtest.Open(t)
	clock := &offsetClock{}
	dir := t.TempDir()
	oldFile, newFile, appsFile := filepath.Join(dir, "old"), filepath.Join(dir, "new"), filepath.Join(dir, "apps.yaml")
	rc := &rotatingReceiver{clock: clock, old: []byte(strings.Repeat("o", 40)), new: []byte(strings.Repeat("n", 40)), got: map[string]bool{}}
	for file, secret := range map[string][]byte{oldFile: rc.old, newFile: rc.new} {
		if err := os.WriteFile(file, append(secret, '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rc.knows.Store(&rc.old)
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	writeApps(t, appsFile, srv.URL, oldFile)
	reg, err := apps.Load(appsFile, apps.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w := newWorker(t, db, nil, func(o *WorkerOptions) { o.Apps, o.Clock, o.Interval = reg, clock, 2*time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	go w.Run(ctx)
	t.Cleanup(func() { cancel(); <-w.Done() })

	// A steady stream of events about one user of the app.
	var produced []string
	var pmu sync.Mutex
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			id := enqueueFor(t, db, "shop\x1fuser-1", VerificationPosted, map[string]string{"verification_id": verID, "status": "posted"})
			pmu.Lock()
			produced = append(produced, id)
			pmu.Unlock()
			w.Wake()
			time.Sleep(time.Millisecond)
		}
	}()
	waitFor := func(what string, n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for rc.received() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d deliveries, want %d", what, rc.received(), n)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}

	waitFor("before the rotation", 20)
	// The rotation: the new secret signs from now on, the old one too
	// until its date, an hour away.
	retire := clock.Now().Add(time.Hour).UTC()
	writeApps(t, appsFile, srv.URL, newFile, oldFile+"|"+retire.Format(time.RFC3339))
	if changed, err := reg.Reload(); err != nil || !changed {
		t.Fatalf("reload: %v, %v", changed, err)
	}
	waitFor("while both secrets sign", rc.received()+20)
	// The receiver's operators deploy the new secret, in the middle of the
	// stream and of the window.
	rc.knows.Store(&rc.new)
	waitFor("after the receiver moved to the new secret", rc.received()+20)
	// The old secret's date passes.
	rc.mu.Lock()
	rc.retiredAt = retire
	rc.mu.Unlock()
	clock.Advance(2 * time.Hour)
	waitFor("after the old secret retired", rc.received()+20)
	close(stop)
	<-done
	pmu.Lock()
	total := len(produced)
	pmu.Unlock()
	waitFor("the whole stream", total)

	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, id := range produced {
		if !rc.got[id] {
			t.Errorf("event %s was never delivered", id)
		}
	}
	if rc.refused != 0 {
		t.Errorf("%d deliveries did not verify with the secret the receiver knew at the time", rc.refused)
	}
	if rc.dual == 0 || rc.dualBad != 0 {
		t.Errorf("deliveries signed with both secrets: %d, of which %d not verifiable with each alone", rc.dual, rc.dualBad)
	}
	if rc.oldAfter != 0 {
		t.Errorf("%d deliveries still signed with the old secret after it retired", rc.oldAfter)
	}
}
