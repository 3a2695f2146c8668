package banklink

import "time"

// Page asks for one page of a subject's items or accounts, in the order
// they were created: at most Limit of them after After (nil: from the
// first). A Limit below 1 means no limit (every one left).
type Page struct {
	Limit int
	After *Position
}

// Position is a place in a list ordered by (created_at, id): the keyset of
// the last row of a page, from which the next page starts. The api package
// hands it out only inside a MAC'd cursor, so a client cannot forge one.
type Position struct {
	CreatedAt time.Time `json:"t"`
	ID        string    `json:"id"`
}

// pageArgs are the SQL arguments of a page's keyset condition
// `($n::timestamptz IS NULL OR (created_at, id) > ($n, $n+1))` and its
// LIMIT (one more row than asked, to learn whether a next page exists; NULL
// for no limit).
func (p Page) pageArgs() (after *time.Time, afterID string, limit *int) {
	if p.After != nil {
		t := p.After.CreatedAt
		after, afterID = &t, p.After.ID
	}
	if p.Limit > 0 {
		n := p.Limit + 1
		limit = &n
	}
	return after, afterID, limit
}

// cut trims rows fetched with pageArgs to the page and says where the next
// page starts (nil when this is the last).
func cut[T any](p Page, rows []T, pos func(T) Position) ([]T, *Position) {
	if p.Limit < 1 || len(rows) <= p.Limit {
		return rows, nil
	}
	rows = rows[:p.Limit]
	next := pos(rows[len(rows)-1])
	return rows, &next
}
