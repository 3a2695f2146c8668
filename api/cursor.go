package api

import (
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api/idempotency"
)

// Page sizes of the list routes (api/openapi.yaml: at most 100).
const (
	defaultPageLimit = 50
	maxPageLimit     = 100
	maxCursorLength  = 512
)

// labelCursor separates the cursors' MACs from every other use of the
// idempotency system key (the API's key for values it hands out and must
// recognise, bound to the caller).
const labelCursor = "kluis/api/cursor/v1"

// pageLimit reads `limit`: 50 when absent, 1 to 100, anything else 400.
func pageLimit(c echo.Context) (int, error) {
	raw := c.QueryParam("limit")
	if raw == "" {
		return defaultPageLimit, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > maxPageLimit || strconv.Itoa(n) != raw {
		return 0, kluis.Errorf(kluis.EInvalid, "limit must be a whole number from 1 to %d", maxPageLimit)
	}
	return n, nil
}

// onlyQuery refuses a query parameter the route does not take, so that a
// misspelt filter is a 400 rather than a silently unfiltered list.
func onlyQuery(c echo.Context, allowed ...string) error {
	for name := range c.QueryParams() {
		ok := name == "limit" || name == "cursor"
		for _, a := range allowed {
			ok = ok || name == a
		}
		if !ok {
			return kluis.Errorf(kluis.EInvalid, "unknown query parameter %q", clip(name))
		}
	}
	return nil
}

// cursorBinding is what a cursor is valid for: the caller, the route, its
// path parameters and its filters (every query parameter but cursor and
// limit, which may change from page to page). A cursor used with anything
// else is a 400.
func cursorBinding(c echo.Context) [][]byte {
	parts := [][]byte{[]byte(labelCursor), []byte(idempotencyScope(c)), []byte(c.Path())}
	for i, n := range c.ParamNames() {
		parts = append(parts, []byte(n+"="+c.ParamValues()[i]))
	}
	q := c.QueryParams()
	names := make([]string, 0, len(q))
	for n := range q {
		if n != "cursor" && n != "limit" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		parts = append(parts, []byte(n+"="+strings.Join(q[n], "\x00")))
	}
	return parts
}

// sealCursor makes the opaque cursor of a keyset position:
// base64url(JSON position) "." base64url(MAC), the MAC under the
// idempotency system key over the position and cursorBinding. Without the
// key there is no cursor: the request fails closed (503).
func (d *Deps) sealCursor(c echo.Context, pos any) (string, error) {
	payload, err := json.Marshal(pos)
	if err != nil {
		return "", err
	}
	mac, err := d.cursorMAC(c, payload)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(payload) + "." + enc.EncodeToString(mac), nil
}

// openCursor reads the request's cursor into pos; it reports false when the
// request has none. A cursor that is malformed, altered, or made for
// another caller, route or filter is 400.
func (d *Deps) openCursor(c echo.Context, pos any) (bool, error) {
	raw := c.QueryParam("cursor")
	if raw == "" {
		return false, nil
	}
	bad := kluis.Errorf(kluis.EInvalid, "cursor is not valid for this list; start again without it")
	enc := base64.RawURLEncoding
	p, m, ok := strings.Cut(raw, ".")
	if !ok || len(raw) > maxCursorLength {
		return false, bad
	}
	payload, err1 := enc.DecodeString(p)
	got, err2 := enc.DecodeString(m)
	if err1 != nil || err2 != nil {
		return false, bad
	}
	want, err := d.cursorMAC(c, payload)
	if err != nil {
		return false, err
	}
	if !hmac.Equal(got, want) {
		return false, bad
	}
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(pos); err != nil {
		return false, bad
	}
	return true, nil
}

func (d *Deps) cursorMAC(c echo.Context, payload []byte) ([]byte, error) {
	if d.MACs == nil {
		return nil, kluis.Errorf(kluis.EUnavailable, "key store unavailable, try again later")
	}
	m, err := d.MACs.MAC(idempotency.SystemKey, append(cursorBinding(c), payload)...)
	if err != nil {
		return nil, kluis.Unavailable("key store", err)
	}
	return m[:16], nil
}

// listAnswer writes a page: the items under name, and next_cursor when
// there is a next position.
func (d *Deps) listAnswer(c echo.Context, name string, items any, next any) error {
	body := map[string]any{name: items}
	if next != nil {
		cur, err := d.sealCursor(c, next)
		if err != nil {
			return err
		}
		body["next_cursor"] = cur
	}
	return c.JSON(http.StatusOK, body)
}
