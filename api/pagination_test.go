package api_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

// page is one answer of a list route: its rows' ids and next_cursor.
type page struct {
	ids  []string
	next string
}

// getPage reads one page of the list at path (rows under key).
func (be *bankEnv) getPage(t *testing.T, path, tok, key string) page {
	t.Helper()
	status, _, body := be.call(t, "GET", path, tok, "")
	var raw map[string]json.RawMessage
	want(t, status, 200, body, &raw)
	var rows []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(raw[key], &rows); err != nil {
		t.Fatalf("%s: %q is not a list: %s", path, key, body)
	}
	var p page
	for _, r := range rows {
		p.ids = append(p.ids, r.ID)
	}
	if c, ok := raw["next_cursor"]; ok {
		if err := json.Unmarshal(c, &p.next); err != nil || p.next == "" {
			t.Fatalf("%s: next_cursor = %s", path, c)
		}
	}
	return p
}

// walk follows next_cursor from the first page of path with the given
// limit and returns every id, failing on a page over the limit or an id
// seen twice.
func (be *bankEnv) walk(t *testing.T, path, tok, key string, limit int) []string {
	t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	first := path + sep + "limit=" + itoa(limit)
	var all []string
	seen := map[string]bool{}
	for p, n := be.getPage(t, first, tok, key), 0; ; n++ {
		if len(p.ids) > limit {
			t.Fatalf("%s: a page of %d rows with limit=%d", path, len(p.ids), limit)
		}
		for _, id := range p.ids {
			if seen[id] {
				t.Fatalf("%s: %s is on two pages", path, id)
			}
			seen[id] = true
			all = append(all, id)
		}
		if p.next == "" {
			return all
		}
		if n > 100 {
			t.Fatalf("%s: no end after 100 pages", path)
		}
		p = be.getPage(t, first+"&cursor="+url.QueryEscape(p.next), tok, key)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// paginationCases are the refusals every list route shares.
func (be *bankEnv) checkPageRefusals(t *testing.T, path, tok, otherTok, key string) {
	t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	first := be.getPage(t, path+sep+"limit=1", tok, key)
	if first.next == "" {
		t.Fatalf("%s: limit=1 over more than one row gave no next_cursor", path)
	}
	tampered := []byte(first.next)
	tampered[2] ^= 1
	for name, q := range map[string]string{
		"a limit over 100 is 400":                       "limit=101",
		"a limit of 0 is 400":                           "limit=0",
		"a limit that is not a number is 400":           "limit=ten",
		"an unknown query parameter is 400":             "sort=name",
		"an altered cursor is 400":                      "cursor=" + url.QueryEscape(string(tampered)),
		"a cursor that is not a cursor is 400":          "cursor=abc",
		"a cursor from another route is 400 (accounts)": "cursor=" + url.QueryEscape(be.otherRouteCursor(t, path, tok)),
	} {
		status, _, body := be.call(t, "GET", path+sep+q, tok, "")
		if status != 400 || !strings.Contains(body, `"invalid_request"`) {
			t.Errorf("%s: %s: got %d %s", path, name, status, body)
		}
	}
	status, _, body := be.call(t, "GET", path+sep+"cursor="+url.QueryEscape(first.next), otherTok, "")
	if status != 400 {
		t.Errorf("%s: another user's cursor: got %d %s, want 400", path, status, body)
	}
	// The limit may change from page to page; the cursor stays valid.
	if got := be.getPage(t, path+sep+"limit=100&cursor="+url.QueryEscape(first.next), tok, key); len(got.ids) == 0 || got.ids[0] == first.ids[0] {
		t.Errorf("%s: the next page with another limit = %v, after %v", path, got.ids, first.ids)
	}
}

// otherRouteCursor is a valid cursor of another list than path, for the
// same user.
func (be *bankEnv) otherRouteCursor(t *testing.T, path, tok string) string {
	t.Helper()
	other, key := "/v1/accounts?limit=1", "accounts"
	if strings.HasPrefix(path, "/v1/accounts") {
		other, key = "/v1/items?limit=1", "items"
	}
	p := be.getPage(t, other, tok, key)
	if p.next == "" {
		t.Fatalf("%s gave no next_cursor", other)
	}
	return p.next
}

func TestEveryListRouteIsPaginated(t *testing.T) {
	t.Parallel()
	be := startBank(t, false)
	tok, otherTok := userToken(t, "user-pages"), userToken(t, "user-pages-other")
	for range 3 {
		be.linkSandbox(t, tok, "ins_sandbox")
	}
	be.linkSandbox(t, otherTok, "ins_sandbox")
	for _, tc := range []struct{ path, key string }{
		{"/v1/items", "items"},
		{"/v1/accounts", "accounts"},
		{"/v1/banks?country=ZA", "banks"},
	} {
		t.Run(strings.TrimPrefix(tc.path, "/v1/"), func(t *testing.T) {
			whole := be.getPage(t, tc.path, tok, tc.key)
			if whole.next != "" || len(whole.ids) < 3 {
				t.Fatalf("%s with the default limit: %d rows, next_cursor %q", tc.path, len(whole.ids), whole.next)
			}
			for _, limit := range []int{1, 2, 100} {
				got := be.walk(t, tc.path, tok, tc.key, limit)
				if strings.Join(got, ",") != strings.Join(whole.ids, ",") {
					t.Errorf("%s walked with limit=%d = %v, want %v", tc.path, limit, got, whole.ids)
				}
			}
			be.checkPageRefusals(t, tc.path, tok, otherTok, tc.key)
		})
	}
	// Another user's rows are never on the caller's pages.
	others := be.getPage(t, "/v1/items", otherTok, "items")
	mine := strings.Join(be.walk(t, "/v1/items", tok, "items", 1), ",")
	for _, id := range others.ids {
		if strings.Contains(mine, id) {
			t.Errorf("another user's item %s is on the caller's pages", id)
		}
	}
}
