package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/compliance"
)

// send is a request that is safe from any goroutine: it reports failures
// in its answer instead of stopping the test.
func send(c *http.Client, method, u, token, body string, header map[string]string) (int, http.Header, string) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		return 0, nil, err.Error()
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

type staffErasure struct {
	ID                       string              `json:"id"`
	Status                   string              `json:"status"`
	RequestedBy              string              `json:"requested_by"`
	RequestedAt              time.Time           `json:"requested_at"`
	ClosedBy                 string              `json:"closed_by"`
	ClosedAt                 *time.Time          `json:"closed_at"`
	CloseReason              string              `json:"close_reason"`
	ExceptionsAcknowledgedBy string              `json:"exceptions_acknowledged_by"`
	Receipt                  *compliance.Receipt `json:"receipt"`
}

type erasureList struct {
	ErasureRequests []staffErasure `json:"erasure_requests"`
	NextCursor      string         `json:"next_cursor"`
}

type holdList struct {
	LegalHolds []compliance.LegalHold `json:"legal_holds"`
	NextCursor string                 `json:"next_cursor"`
}

type accessReport struct {
	Entries []struct {
		At    time.Time `json:"at"`
		Actor struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		} `json:"actor"`
		Action  string `json:"action"`
		Kind    string `json:"kind"`
		Purpose string `json:"purpose"`
		Outcome string `json:"outcome"`
	} `json:"entries"`
	NextCursor string `json:"next_cursor"`
}

// request asks (as staff_a unless by says otherwise) for the erasure of sub.
func (ce *complianceEnv) request(t *testing.T, by, sub string) staffErasure {
	t.Helper()
	status, body := ce.call(t, "POST", "/erasure-requests", staff(t, by), `{"subject_id":"`+sub+`","reason":"TICKET-18"}`)
	if status != 201 {
		t.Fatalf("request erasure of %s = %d %s", sub, status, body)
	}
	return decode[staffErasure](t, body)
}

// listAll pages through path (a list route with its filters) limit at a
// time and returns the ids in order, failing on a duplicate.
func (ce *complianceEnv) listAll(t *testing.T, path string, limit int) []string {
	t.Helper()
	var ids []string
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 50 {
			t.Fatal("no end to the pages")
		}
		u := fmt.Sprintf("%s%slimit=%d", path, sep(path), limit)
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		status, body := ce.call(t, "GET", u, staff(t, "staff_a"), "")
		if status != 200 {
			t.Fatalf("GET %s = %d %s", u, status, body)
		}
		page := decode[struct {
			ErasureRequests []struct{ ID string } `json:"erasure_requests"`
			LegalHolds      []struct{ ID string } `json:"legal_holds"`
			NextCursor      string                `json:"next_cursor"`
		}](t, body)
		items := append(page.ErasureRequests, page.LegalHolds...)
		if len(items) > limit {
			t.Fatalf("a page of %d items, limit %d", len(items), limit)
		}
		for _, it := range items {
			if seen[it.ID] {
				t.Fatalf("%s listed twice", it.ID)
			}
			seen[it.ID] = true
			ids = append(ids, it.ID)
		}
		if page.NextCursor == "" {
			return ids
		}
		if len(items) != limit {
			t.Fatalf("a short page (%d of %d) with a next cursor", len(items), limit)
		}
		cursor = page.NextCursor
	}
}

func sep(path string) string {
	if strings.Contains(path, "?") {
		return "&"
	}
	return "?"
}

// The whole workflow through HTTP: request, reject, cancel, approve, list
// with filters and pages, holds listed.
func TestTheErasureWorkflowThroughHTTP(t *testing.T) {
	ce := startCompliance(t)
	staffA, staffB := staff(t, "staff_a"), staff(t, "staff_b")
	subs := []string{"wf_reject", "wf_cancel", "wf_approve", "wf_open_1", "wf_open_2", "wf_open_3", "wf_by_b"}
	for _, s := range subs {
		makeSubjectData(t, ce.Env, s)
	}

	// Reject: another staff member, with a reason; the requester cannot.
	rej := ce.request(t, "staff_a", "wf_reject")
	for _, c := range []struct {
		name, token, body string
		want              int
	}{
		{"the requester cannot reject", staffA, `{"reason":"T-1"}`, 403},
		{"a rejection needs a reason", staffB, `{"reason":"  "}`, 400},
		{"a reason is bounded", staffB, `{"reason":"` + strings.Repeat("x", 501) + `"}`, 400},
		{"an unknown field", staffB, `{"reason":"T-1","extra":true}`, 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			if status, body := ce.call(t, "POST", "/erasure-requests/"+rej.ID+"/reject", c.token, c.body); status != c.want {
				t.Fatalf("reject = %d %s, want %d", status, body, c.want)
			}
		})
	}
	status, body := ce.call(t, "POST", "/erasure-requests/"+rej.ID+"/reject", staffB, `{"reason":"TICKET-REJ"}`)
	got := decode[staffErasure](t, body)
	if status != 200 || got.Status != "rejected" || got.ClosedBy != "staff_b" || got.CloseReason != "TICKET-REJ" || got.ClosedAt == nil {
		t.Fatalf("reject = %d %s", status, body)
	}
	for _, c := range []struct{ name, path, token, body string }{
		{"rejecting twice", "/reject", staffB, `{"reason":"T-2"}`},
		{"approving a rejected request", "/approve", staffB, ""},
		{"cancelling a rejected request", "/cancel", staffA, `{"reason":"T-2"}`},
	} {
		if status, body := ce.call(t, "POST", "/erasure-requests/"+rej.ID+c.path, c.token, c.body); status != 409 || !strings.Contains(body, `"code":"conflict"`) {
			t.Errorf("%s = %d %s, want 409 conflict", c.name, status, body)
		}
	}
	// The rejected request let go of the subject: a new one may be made.
	again := ce.request(t, "staff_b", "wf_reject")

	// Cancel: only the requester withdraws.
	can := ce.request(t, "staff_a", "wf_cancel")
	if status, body := ce.call(t, "POST", "/erasure-requests/"+can.ID+"/cancel", staffB, `{"reason":"T-3"}`); status != 403 {
		t.Fatalf("cancel by another = %d %s, want 403", status, body)
	}
	status, hdr, body := send(ce.console, "POST", ce.Internal.URL+"/compliance/v1/erasure-requests/"+can.ID+"/cancel", staffA,
		`{"reason":"TICKET-CAN"}`, map[string]string{"Idempotency-Key": "cancel-1"})
	if got := decode[staffErasure](t, body); status != 200 || got.Status != "cancelled" || got.ClosedBy != "staff_a" {
		t.Fatalf("cancel = %d %s", status, body)
	}
	// The Idempotency-Key replays the answer, and refuses another body.
	status2, hdr2, body2 := send(ce.console, "POST", ce.Internal.URL+"/compliance/v1/erasure-requests/"+can.ID+"/cancel", staffA,
		`{"reason":"TICKET-CAN"}`, map[string]string{"Idempotency-Key": "cancel-1"})
	if status2 != 200 || body2 != body || hdr2.Get("Idempotent-Replayed") != "true" || hdr.Get("Idempotent-Replayed") != "" {
		t.Errorf("replay = %d %q %s", status2, hdr2.Get("Idempotent-Replayed"), body2)
	}
	if status, _, body := send(ce.console, "POST", ce.Internal.URL+"/compliance/v1/erasure-requests/"+can.ID+"/cancel", staffA,
		`{"reason":"OTHER"}`, map[string]string{"Idempotency-Key": "cancel-1"}); status != 422 || !strings.Contains(body, "idempotency_key_reused") {
		t.Errorf("the key with another body = %d %s", status, body)
	}

	// Approve completes; nothing closes it afterwards.
	app := ce.request(t, "staff_a", "wf_approve")
	if status, body := ce.call(t, "POST", "/erasure-requests/"+app.ID+"/approve", staffB, ""); status != 200 || decode[staffErasure](t, body).Status != "completed" {
		t.Fatalf("approve = %d %s", status, body)
	}
	if status, body := ce.call(t, "POST", "/erasure-requests/"+app.ID+"/reject", staffB, `{"reason":"T-4"}`); status != 409 {
		t.Errorf("rejecting a completed request = %d %s, want 409", status, body)
	}
	if status, body := ce.call(t, "POST", "/erasure-requests/"+app.ID+"/complete", staffB, ""); status != 409 {
		t.Errorf("completing with exceptions a completed request = %d %s, want 409", status, body)
	}

	open := []staffErasure{ce.request(t, "staff_a", "wf_open_1"), ce.request(t, "staff_a", "wf_open_2"), ce.request(t, "staff_a", "wf_open_3")}
	byB := ce.request(t, "staff_b", "wf_by_b")

	// Every request, newest first, the same whatever the page size.
	all := ce.listAll(t, "/erasure-requests", 100)
	want := []string{byB.ID, open[2].ID, open[1].ID, open[0].ID, app.ID, can.ID, again.ID, rej.ID}
	if strings.Join(all, ",") != strings.Join(want, ",") {
		t.Fatalf("all requests = %v, want %v", all, want)
	}
	for _, limit := range []int{1, 2, 3, 7} {
		if got := ce.listAll(t, "/erasure-requests", limit); strings.Join(got, ",") != strings.Join(all, ",") {
			t.Errorf("pages of %d = %v, want %v", limit, got, all)
		}
	}
	filters := []struct {
		query string
		want  []string
	}{
		{"status=rejected", []string{rej.ID}},
		{"status=cancelled", []string{can.ID}},
		{"status=completed", []string{app.ID}},
		{"status=pending_approval", []string{byB.ID, open[2].ID, open[1].ID, open[0].ID, again.ID}},
		{"status=rejected,cancelled", []string{can.ID, rej.ID}},
		{"requested_by=staff_b", []string{byB.ID, again.ID}},
		{"status=pending_approval&requested_by=staff_a", []string{open[2].ID, open[1].ID, open[0].ID}},
		{"requested_before=" + url.QueryEscape(open[0].RequestedAt.Format(time.RFC3339Nano)), []string{app.ID, can.ID, again.ID, rej.ID}},
	}
	for _, f := range filters {
		for _, limit := range []int{1, 50} {
			if got := ce.listAll(t, "/erasure-requests?"+f.query, limit); strings.Join(got, ",") != strings.Join(f.want, ",") {
				t.Errorf("%s (pages of %d) = %v, want %v", f.query, limit, got, f.want)
			}
		}
	}
	status, body = ce.call(t, "GET", "/erasure-requests?status=pending_approval&limit=2", staffA, "")
	first := decode[erasureList](t, body)
	if status != 200 || len(first.ErasureRequests) != 2 || first.NextCursor == "" || first.ErasureRequests[0].RequestedBy == "" {
		t.Fatalf("first page = %d %s", status, body)
	}
	tampered := []byte(first.NextCursor)
	tampered[2] ^= 1
	bad := []struct{ name, query string }{
		{"a limit over 100", "limit=101"},
		{"a limit of 0", "limit=0"},
		{"a limit that is not a number", "limit=ten"},
		{"an unknown status", "status=done"},
		{"an unknown parameter", "statuss=rejected"},
		{"a requested_before that is not a time", "requested_before=yesterday"},
		{"an altered cursor", "status=pending_approval&cursor=" + url.QueryEscape(string(tampered))},
		{"a cursor that is not one", "status=pending_approval&cursor=abc"},
		{"a cursor with other filters", "status=rejected&cursor=" + url.QueryEscape(first.NextCursor)},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			if status, body := ce.call(t, "GET", "/erasure-requests?"+b.query, staffA, ""); status != 400 {
				t.Fatalf("GET ?%s = %d %s, want 400", b.query, status, body)
			}
		})
	}
	// Another staff member cannot use staff_a's cursor either.
	if status, body := ce.call(t, "GET", "/erasure-requests?status=pending_approval&cursor="+url.QueryEscape(first.NextCursor), staffB, ""); status != 400 {
		t.Errorf("another staff member's cursor = %d %s, want 400", status, body)
	}

	// Holds: active by default, lifted, all; paged.
	var holds []compliance.LegalHold
	for _, s := range []string{"wf_open_1", "wf_open_2", "wf_open_3"} {
		status, body := ce.call(t, "POST", "/legal-holds", staffA, `{"subject_id":"`+s+`","reason":"CASE-18"}`)
		if status != 201 {
			t.Fatalf("hold = %d %s", status, body)
		}
		holds = append(holds, decode[compliance.LegalHold](t, body))
	}
	if status, body := ce.call(t, "DELETE", "/legal-holds/"+holds[1].ID, staffB, ""); status != 204 {
		t.Fatalf("lift = %d %s", status, body)
	}
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"/legal-holds", []string{holds[2].ID, holds[0].ID}},
		{"/legal-holds?status=active", []string{holds[2].ID, holds[0].ID}},
		{"/legal-holds?status=lifted", []string{holds[1].ID}},
		{"/legal-holds?status=all", []string{holds[2].ID, holds[1].ID, holds[0].ID}},
	} {
		for _, limit := range []int{1, 2, 100} {
			if got := ce.listAll(t, c.query, limit); strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Errorf("%s (pages of %d) = %v, want %v", c.query, limit, got, c.want)
			}
		}
	}
	status, body = ce.call(t, "GET", "/legal-holds?status=all", staffA, "")
	if hl := decode[holdList](t, body); status != 200 || len(hl.LegalHolds) != 3 || hl.LegalHolds[1].LiftedBy != "staff_b" || hl.NextCursor != "" {
		t.Errorf("holds = %d %s", status, body)
	}
	if status, body := ce.call(t, "GET", "/legal-holds?status=gone", staffA, ""); status != 400 {
		t.Errorf("an unknown hold status = %d %s", status, body)
	}

	// Every step is audited.
	for action, n := range map[string]int{"erasure.reject": 1, "erasure.cancel": 1} {
		if got := auditCount(t, ce.Env, `action = $1 AND outcome = 'success' AND subject_pseudonym IS NOT NULL`, action); got != n {
			t.Errorf("%s audited %d times, want %d", action, got, n)
		}
	}
	if got := auditCount(t, ce.Env, `action = 'erasure.reject' AND outcome = 'denied' AND details->>'reason' = 'requester_cannot_reject'`); got != 1 {
		t.Errorf("the refused self-rejection audited %d times", got)
	}
	if got := auditCount(t, ce.Env, `action = 'erasure.cancel' AND outcome = 'denied' AND details->>'reason' = 'only_requester_cancels'`); got != 1 {
		t.Errorf("the refused cancellation audited %d times", got)
	}
}

// Approvals and rejections of one pending request, at once: exactly one
// side wins (every approver 200 and every rejecter 409, or one rejecter 200
// and everyone else 409), and the request ends in the winner's state.
// Rounds run one after another: each request races within itself.
func TestConcurrentApproveAndRejectOfOneRequestHaveExactlyOneWinner(t *testing.T) {
	ce := startCompliance(t)
	const rounds, each = 6, 2
	approvers, rejecters := []string{staff(t, "staff_b"), staff(t, "staff_c")}, []string{staff(t, "staff_d"), staff(t, "staff_e")}
	wins := map[string]int{}
	for round := 0; round < rounds; round++ {
		sub := fmt.Sprintf("race_%d", round)
		makeSubjectData(t, ce.Env, sub)
		id := ce.request(t, "staff_a", sub).ID
		base := ce.Internal.URL + "/compliance/v1/erasure-requests/" + id
		approved, rejected := make([]int, each), make([]int, each)
		var wg sync.WaitGroup
		for i := 0; i < each; i++ {
			wg.Add(2)
			go func() {
				defer wg.Done()
				approved[i], _, _ = send(ce.console, "POST", base+"/approve", approvers[i], "", nil)
			}()
			go func() {
				defer wg.Done()
				rejected[i], _, _ = send(ce.console, "POST", base+"/reject", rejecters[i], `{"reason":"RACE"}`, nil)
			}()
		}
		wg.Wait()
		_, body := ce.call(t, "GET", "/erasure-requests/"+id, approvers[0], "")
		final := decode[staffErasure](t, body).Status
		count := func(answers []int, status int) (n int) {
			for _, a := range answers {
				if a == status {
					n++
				}
			}
			return n
		}
		switch {
		case count(approved, 200) == each && count(rejected, 409) == each:
			wins["approve"]++
			if final != "completed" && final != "approved" {
				t.Errorf("%s: approve won, but the request is %s", id, final)
			}
		case count(rejected, 200) == 1 && count(rejected, 409) == each-1 && count(approved, 409) == each:
			wins["reject"]++
			if final != "rejected" {
				t.Errorf("%s: reject won, but the request is %s", id, final)
			}
			if n := auditCount(t, ce.Env, `action = 'erasure.approve' AND outcome = 'success' AND target = $1`, id); n != 0 {
				t.Errorf("%s: a rejected request has an audited approval", id)
			}
		default:
			t.Errorf("%s: approvals %v, rejections %v: want exactly one side to win", id, approved, rejected)
		}
	}
	t.Logf("wins: %v", wins)
	var fenced int
	if err := ce.DB.Pool.QueryRow(context.Background(), `
		SELECT count(*) FROM subjects s JOIN erasure_requests e ON e.id = s.erasure_request_id WHERE e.status = 'rejected'`).Scan(&fenced); err != nil {
		t.Fatal(err)
	}
	if fenced != 0 {
		t.Errorf("%d subjects fenced by a rejected request", fenced)
	}
}

// A needs_attention erasure is completed by two staff members, never by
// one: the receipt names the item the provider did not revoke, and kluis's
// own copies are gone.
func TestAStalledErasureIsCompletedWithExceptionsByTwoStaffAndNeverByOne(t *testing.T) {
	fe := startFence(t)
	const sub = "user_stalled"
	tok := userToken(t, sub)
	it := fe.linkSandbox(t, tok, "ins_sandbox")
	var subjectID string
	if err := fe.DB.Pool.QueryRow(context.Background(), `SELECT id FROM subjects WHERE external_id = $1`, sub).Scan(&subjectID); err != nil {
		t.Fatal(err)
	}
	fe.gate.refuse.Store(true)
	id, _, _ := fe.erase(t, sub)
	_, _ = fe.comp.ResumeErasures(context.Background())
	console := fe.ServiceClient(t, "compliance-console")
	complete := func(who string) (int, string) {
		status, _, body := apitest.Do(t, console, "POST", fe.Internal.URL+"/compliance/v1/erasure-requests/"+id+"/complete", staff(t, who), "", "")
		return status, body
	}
	status, _, body := apitest.Do(t, console, "GET", fe.Internal.URL+"/compliance/v1/erasure-requests/"+id, staff(t, "staff_c"), "", "")
	if decode[staffErasure](t, body).Status != compliance.ErasureNeedsAttention {
		t.Fatalf("the stalled erasure = %d %s, want needs_attention", status, body)
	}

	// Under a hold, neither step.
	status, _, body = apitest.Do(t, console, "POST", fe.Internal.URL+"/compliance/v1/legal-holds", staff(t, "staff_c"), "application/json",
		`{"subject_id":"`+sub+`","reason":"CASE-9"}`)
	if status != 201 {
		t.Fatalf("hold = %d %s", status, body)
	}
	hold := decode[compliance.LegalHold](t, body)
	if status, body := complete("staff_c"); status != 409 || !strings.Contains(body, `"code":"legal_hold"`) {
		t.Fatalf("complete under a hold = %d %s, want 409 legal_hold", status, body)
	}
	if status, _, body := apitest.Do(t, console, "DELETE", fe.Internal.URL+"/compliance/v1/legal-holds/"+hold.ID, staff(t, "staff_c"), "", ""); status != 204 {
		t.Fatalf("lift = %d %s", status, body)
	}

	// The first staff member acknowledges; alone they can do no more.
	status, body = complete("staff_c")
	got := decode[staffErasure](t, body)
	if status != 200 || got.Status != compliance.ErasureNeedsAttention || got.ExceptionsAcknowledgedBy != "staff_c" {
		t.Fatalf("first call = %d %s, want needs_attention acknowledged by staff_c", status, body)
	}
	if status, body := complete("staff_c"); status != 403 {
		t.Fatalf("the same staff member again = %d %s, want 403", status, body)
	}
	if n := fe.count(t, `SELECT count(*) FROM keystore.subject_keys WHERE subject_id = $1`, subjectID); n == 0 {
		t.Fatal("one staff member alone destroyed the keys")
	}
	if n := fe.count(t, `SELECT count(*) FROM items WHERE subject_id = $1`, subjectID); n != 1 {
		t.Fatal("one staff member alone deleted rows")
	}

	// Another completes it.
	status, body = complete("staff_a")
	got = decode[staffErasure](t, body)
	if status != 200 || got.Status != compliance.ErasureCompletedWithExceptions || got.Receipt == nil {
		t.Fatalf("second call = %d %s, want completed_with_exceptions", status, body)
	}
	rc := got.Receipt
	if len(rc.UnrevokedItems) != 1 || rc.UnrevokedItems[0].ItemID != it.ID || rc.UnrevokedItems[0].Provider == "" {
		t.Errorf("receipt's unrevoked items = %+v, want %s", rc.UnrevokedItems, it.ID)
	}
	if strings.Join(rc.ExceptionsApprovedBy, ",") != "staff_c,staff_a" || rc.SubjectKeysDestroyed < 1 || rc.Erased["items"] != 1 || rc.Erased["subjects"] != 1 {
		t.Errorf("receipt = %+v", rc)
	}
	if n := fe.count(t, `SELECT count(*) FROM keystore.subject_keys WHERE subject_id = $1`, subjectID); n != 0 {
		t.Errorf("%d subject keys left", n)
	}
	if found := rowsMentioning(t, fe.Env, subjectID); len(found) > 0 {
		t.Errorf("rows still mention the erased subject: %v", found)
	}
	if n := fe.liveAtProvider(t); n != 1 {
		t.Errorf("%d items live at the provider, want the 1 it refused to revoke (named in the receipt)", n)
	}
	if status, body := complete("staff_b"); status != 409 {
		t.Errorf("completing again = %d %s, want 409", status, body)
	}
	for where, n := range map[string]int{
		`action = 'erasure.exceptions_acknowledged' AND actor = 'staff_c' AND outcome = 'success'`:                                              1,
		`action = 'erasure.complete_with_exceptions' AND actor = 'staff_c' AND outcome = 'denied' AND details->>'reason' = 'same_staff_member'`: 1,
		`action = 'erasure.complete_with_exceptions' AND actor = 'staff_c' AND outcome = 'denied' AND details->>'reason' = 'legal_hold'`:        1,
		`action = 'erasure.completed_with_exceptions' AND actor = 'staff_a' AND details->'unrevoked_items' ? '` + it.ID + `'`:                   1,
	} {
		if got := fe.count(t, `SELECT count(*) FROM audit_entries WHERE `+where); got != n {
			t.Errorf("audit entries where %s = %d, want %d", where, got, n)
		}
	}
	// The fence ended with it: the same sub is a new subject.
	fe.gate.refuse.Store(false)
	fe.linkSandbox(t, tok, "ins_sandbox")
}

type reveal struct{ service, kind, purpose, outcome string }

// A person's access report lists exactly the reveals of their credentials
// and the staff actions on them, newest first, to staff and to the person,
// and nothing of anyone else's.
func TestAnAccessReportListsExactlyTheRevealsOfThePersonsCredentials(t *testing.T) {
	ce := startCompliance(t)
	alice := makeSubjectData(t, ce.Env, "user_alice")
	bob := makeSubjectData(t, ce.Env, "user_bob")
	doReveal := func(service, ref, purpose string) int {
		status, _, _ := apitest.Do(t, ce.ServiceClient(t, service), "POST", revealURL(ce.Env, ref), "", "application/json", `{"purpose":"`+purpose+`"}`)
		return status
	}
	wantAlice := []reveal{
		{"payments", "bank_access_token", "payment_initiation", "success"},
		{"reporting", "account_number", "statement", "success"},
		{"reporting", "bank_access_token", "statement", "denied"},
		{"payments", "account_number", "balance_check", "success"},
	}
	refs := map[string]string{"bank_access_token": alice.tokenRef, "account_number": alice.numberRef}
	for _, r := range wantAlice {
		doReveal(r.service, refs[r.kind], r.purpose)
	}
	if s := doReveal("payments", bob.tokenRef, "payment_initiation"); s != 200 {
		t.Fatalf("bob's reveal = %d", s)
	}
	staffA := staff(t, "staff_a")
	_, body := ce.call(t, "POST", "/legal-holds", staffA, `{"subject_id":"user_alice","reason":"CASE-1"}`)
	hold := decode[compliance.LegalHold](t, body)
	ce.call(t, "DELETE", "/legal-holds/"+hold.ID, staffA, "")

	staffReport := func(query string) accessReport {
		status, body := ce.call(t, "GET", "/subjects/user_alice/access-report"+query, staffA, "")
		if status != 200 {
			t.Fatalf("staff report = %d %s", status, body)
		}
		for _, secret := range []string{"access-sandbox", "62001234567", "250655", "cred_", "user_bob", bob.subjectID, alice.subjectID} {
			if strings.Contains(body, secret) {
				t.Errorf("the report carries %q", secret)
			}
		}
		return decode[accessReport](t, body)
	}
	rep := staffReport("")
	var reveals []reveal
	var staffActions []string
	for i, e := range rep.Entries {
		if i > 0 && e.At.After(rep.Entries[i-1].At) {
			t.Errorf("entry %d is newer than the one before", i)
		}
		switch e.Action {
		case "credential.reveal":
			if e.Actor.Type != "service" {
				t.Errorf("a reveal by %+v", e.Actor)
			}
			reveals = append(reveals, reveal{e.Actor.ID, e.Kind, e.Purpose, e.Outcome})
		default:
			if e.Actor.Type == "staff" {
				if e.Actor.ID != "staff_a" {
					t.Errorf("staff action by %q", e.Actor.ID)
				}
				staffActions = append(staffActions, e.Action)
			}
		}
	}
	sortReveals(reveals)
	sortReveals(wantAlice)
	if fmt.Sprint(reveals) != fmt.Sprint(wantAlice) {
		t.Errorf("alice's reveals = %v, want %v", reveals, wantAlice)
	}
	if strings.Join(staffActions, ",") != "legal_hold.lifted,legal_hold.placed" {
		t.Errorf("staff actions = %v, want the hold lifted and placed", staffActions)
	}
	if n := auditCount(t, ce.Env, `action = 'subject.access_report' AND actor = 'staff_a' AND subject_pseudonym IS NOT NULL`); n != 1 {
		t.Errorf("the staff report audited %d times, want 1", n)
	}

	// Pages of 2 give the same entries, with no gap and no repeat.
	var paged []string
	cursor := ""
	for {
		q := "?limit=2"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		page := staffReport(q)
		for _, e := range page.Entries {
			if e.Action == "subject.access_report" {
				continue // looking adds entries above the cursor
			}
			paged = append(paged, e.At.Format(time.RFC3339Nano)+e.Action+e.Actor.ID+e.Purpose+e.Outcome)
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	full := staffReport("?limit=100")
	var whole []string
	for _, e := range full.Entries {
		if e.Action == "subject.access_report" {
			continue
		}
		whole = append(whole, e.At.Format(time.RFC3339Nano)+e.Action+e.Actor.ID+e.Purpose+e.Outcome)
	}
	if strings.Join(paged, "|") != strings.Join(whole, "|") {
		t.Errorf("paged report differs:\n%v\n%v", paged, whole)
	}

	// The person's own report: the same reveals; staff by role only.
	own := func(sub, query string) (int, string) {
		status, _, body := apitest.Do(t, nil, "GET", ce.Public.URL+"/v1/me/access-report"+query, userToken(t, sub), "", "")
		return status, body
	}
	status, body := own("user_alice", "")
	if status != 200 || strings.Contains(body, "staff_a") {
		t.Fatalf("alice's own report = %d %s", status, body)
	}
	mine := decode[accessReport](t, body)
	reveals = nil
	for _, e := range mine.Entries {
		if e.Action == "credential.reveal" {
			reveals = append(reveals, reveal{e.Actor.ID, e.Kind, e.Purpose, e.Outcome})
		}
		if e.Actor.Type == "staff" && e.Actor.ID != compliance.StaffActorForSubject {
			t.Errorf("the person's report names staff member %q", e.Actor.ID)
		}
	}
	sortReveals(reveals)
	if fmt.Sprint(reveals) != fmt.Sprint(wantAlice) {
		t.Errorf("alice's own reveals = %v, want %v", reveals, wantAlice)
	}
	status, body = own("user_bob", "")
	bobs := decode[accessReport](t, body)
	if status != 200 || len(bobs.Entries) != 1 || bobs.Entries[0].Purpose != "payment_initiation" {
		t.Errorf("bob's own report = %d %s", status, body)
	}
	// A user cannot ask for another's report, nor page with another's cursor.
	if status, body := own("user_bob", "?subject_id=user_alice"); status != 400 {
		t.Errorf("bob naming alice = %d %s, want 400", status, body)
	}
	_, body = own("user_alice", "?limit=1")
	if c := decode[accessReport](t, body).NextCursor; c == "" {
		t.Fatal("no next cursor")
	} else if status, body := own("user_bob", "?limit=1&cursor="+url.QueryEscape(c)); status != 400 {
		t.Errorf("bob with alice's cursor = %d %s, want 400", status, body)
	}
	if status, _, body := apitest.Do(t, nil, "GET", ce.Public.URL+"/v1/me/access-report", "", "", ""); status != 401 {
		t.Errorf("no token = %d %s, want 401", status, body)
	}
}

func sortReveals(r []reveal) {
	sort.Slice(r, func(i, j int) bool { return fmt.Sprint(r[i]) < fmt.Sprint(r[j]) })
}
