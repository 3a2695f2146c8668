package compliance_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/audit/audittest"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/postgres"
)

// stepClock is a clock the test sets.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *stepClock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

type refusedEntry struct {
	RequestID string
	Details   struct {
		Count          int            `json:"count"`
		Source         string         `json:"source"`
		WindowStart    string         `json:"window_start"`
		FirstAt        string         `json:"first_at"`
		LastAt         string         `json:"last_at"`
		FirstRequestID string         `json:"first_request_id"`
		LastRequestID  string         `json:"last_request_id"`
		Kinds          map[string]int `json:"kinds"`
		Reasons        map[string]int `json:"reasons"`
		Routes         map[string]int `json:"routes"`
		Actors         map[string]int `json:"actors"`
	}
}

func refusedEntries(t *testing.T, db *postgres.DB) []refusedEntry {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(),
		`SELECT request_id, details FROM audit_entries WHERE action = $1 ORDER BY details->>'window_start', details->>'source'`, compliance.ActionRefused)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []refusedEntry
	for rows.Next() {
		var e refusedEntry
		var raw []byte
		if err := rows.Scan(&e.RequestID, &raw); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &e.Details); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

var minute0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func refusal(src string, i int) compliance.Refusal {
	return compliance.Refusal{
		Source: src, Kind: compliance.RefusalAuthn, Reason: "malformed token",
		Route: "GET /v1/items", RequestID: fmt.Sprintf("req_%d", i),
	}
}

func TestRefusalsOfOneSourceInOneMinuteAreOneEntry(t *testing.T) {
	a, db := audittest.NewAuditor(t)
	clock := &stepClock{t: minute0.Add(5 * time.Second)}
	r := compliance.NewRefusals(a, compliance.RefusalOptions{Clock: clock})
	ctx := context.Background()

	var wg sync.WaitGroup
	for g := 0; g < 10; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				r.Note(refusal("198.51.100.7", g*50+i))
			}
		}(g)
	}
	wg.Wait()
	if err := r.FlushDue(ctx); err != nil {
		t.Fatal(err)
	}
	if got := refusedEntries(t, db); len(got) != 0 {
		t.Fatalf("%d entries written before the minute ended", len(got))
	}
	clock.Set(minute0.Add(time.Minute))
	if err := r.FlushDue(ctx); err != nil {
		t.Fatal(err)
	}
	got := refusedEntries(t, db)
	if len(got) != 1 {
		t.Fatalf("%d entries, want 1", len(got))
	}
	d := got[0].Details
	if d.Count != 500 || d.Kinds[compliance.RefusalAuthn] != 500 || d.Reasons["malformed token"] != 500 || d.Routes["GET /v1/items"] != 500 {
		t.Fatalf("entry = %+v, want 500 refusals counted by kind, reason and route", d)
	}
	if d.Source == "" || d.Source == "198.51.100.7" {
		t.Fatalf("source = %q, want the address's pseudonym", d.Source)
	}
	if d.WindowStart != minute0.Format(time.RFC3339) || d.FirstAt == "" || d.LastAt == "" || d.FirstRequestID == "" || d.LastRequestID == "" {
		t.Fatalf("entry = %+v, want the minute, first and last times and request ids", d)
	}
	// The next minute is an entry of its own.
	r.Note(refusal("198.51.100.7", 1000))
	clock.Set(minute0.Add(2 * time.Minute))
	if err := r.FlushDue(ctx); err != nil {
		t.Fatal(err)
	}
	if got := refusedEntries(t, db); len(got) != 2 || got[1].Details.Count != 1 {
		t.Fatalf("entries = %+v, want a second entry of 1", got)
	}
}

func TestRefusalsPastTheSourceCapShareOneEntry(t *testing.T) {
	a, db := audittest.NewAuditor(t)
	clock := &stepClock{t: minute0}
	r := compliance.NewRefusals(a, compliance.RefusalOptions{Clock: clock, MaxSources: 3})
	for i := 0; i < 10; i++ {
		r.Note(refusal(fmt.Sprintf("2001:db8::%d", i), i))
		r.Note(refusal(fmt.Sprintf("2001:db8::%d", i), i))
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := refusedEntries(t, db)
	if len(got) != 4 {
		t.Fatalf("%d entries, want 3 sources and one overflow", len(got))
	}
	total, overflow := 0, 0
	for _, e := range got {
		total += e.Details.Count
		if e.Details.Source == compliance.OverflowSource {
			overflow = e.Details.Count
		}
	}
	if total != 20 || overflow != 14 {
		t.Fatalf("counted %d (overflow %d), want 20 (14)", total, overflow)
	}
}

func TestACallersActorsAreCappedInAnEntry(t *testing.T) {
	a, db := audittest.NewAuditor(t)
	r := compliance.NewRefusals(a, compliance.RefusalOptions{Clock: &stepClock{t: minute0}})
	for i := 0; i < 100; i++ {
		f := refusal("192.0.2.1", i)
		f.Actor = fmt.Sprintf("service:name-%d", i)
		r.Note(f)
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := refusedEntries(t, db)
	if len(got) != 1 || len(got[0].Details.Actors) > 17 || got[0].Details.Actors["other"] == 0 {
		t.Fatalf("actors = %v, want at most 16 named and the rest as other", got[0].Details.Actors)
	}
}

func TestRefusalsAreKeptWhileTheAuditLogIsDownAndWrittenWhenItIsBack(t *testing.T) {
	a, db := audittest.NewAuditor(t)
	clock := &stepClock{t: minute0}
	r := compliance.NewRefusals(a, compliance.RefusalOptions{Clock: clock})
	for i := 0; i < 7; i++ {
		r.Note(refusal("192.0.2.9", i))
	}
	clock.Set(minute0.Add(time.Minute))
	down, cancel := context.WithCancel(context.Background())
	cancel() // the write cannot start
	if err := r.FlushDue(down); err == nil {
		t.Fatal("a flush that could not write reported success")
	}
	r.Note(refusal("192.0.2.9", 7)) // the next minute meanwhile
	clock.Set(minute0.Add(2 * time.Minute))
	if err := r.FlushDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := refusedEntries(t, db)
	if len(got) != 2 || got[0].Details.Count != 7 || got[1].Details.Count != 1 {
		t.Fatalf("entries = %+v, want 7 then 1", got)
	}
}

func TestRunWritesWhatIsLeftWhenItStops(t *testing.T) {
	a, db := audittest.NewAuditor(t)
	r := compliance.NewRefusals(a, compliance.RefusalOptions{Clock: &stepClock{t: minute0}})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx, time.Hour) }()
	for i := 0; i < 3; i++ {
		r.Note(refusal("192.0.2.3", i))
	}
	stop()
	<-done
	if got := refusedEntries(t, db); len(got) != 1 || got[0].Details.Count != 3 {
		t.Fatalf("entries after stop = %+v, want one of 3", got)
	}
}
