package idempotency

import (
	"sort"
	"time"
)

// Labels of the claim's MACs. They are v2: the v1 forms were unkeyed
// SHA-256 hashes, and migration 00009 deleted every row made with them.
const (
	labelScope   = "kluis/idempotency/scope/v2"
	labelKey     = "kluis/idempotency/key/v2"
	labelRequest = "kluis/idempotency/request/v2"
	labelBody    = "kluis/idempotency/body/v2"
)

// SystemKey is the system key the Idempotency-Key rows are keyed under
// (vault.SystemKeys; cmd/kluis gathers every part's names, SystemKeys, and
// loads them). api's list cursors are MAC'd under it too (api/cursor.go).
const SystemKey = "idempotency"

// SystemKeys are the names of the system keys idempotency needs loaded.
func SystemKeys() []string { return []string{SystemKey} }

// MAC is HMAC-SHA256 under the idempotency system key of a label and
// parts (vault.SystemKeys.MAC with SystemKey). It fails when the key
// cannot be had.
type MAC func(label string, parts ...[]byte) ([]byte, error)

// Request is what a claim is made of: who asks (Scope: "staff:…",
// "user:…" or "service:…"), their Idempotency-Key, and the request itself.
type Request struct {
	Scope, Key   string
	Method, Path string
	// Params are the route's parameters as "name=value", in any order.
	Params []string
	Body   []byte
}

// NewClaim names the caller's key and fingerprints the request, all under
// mac: the caller and the key are stored only as keyed hashes, and the
// fingerprint is an HMAC bound to the caller and the key, so that a copy
// of the table cannot test guesses of a body (an account number whose mask
// it knows, say) nor tell that two callers sent the same request. The body
// key is derived from the raw key, which is not stored, so a copy of the
// table opens no stored answer either. There is no unkeyed fallback: a
// weaker hash would bring the guessing back, so without mac the caller
// fails closed.
func NewClaim(mac MAC, r Request, lockFor, ttl time.Duration) (*Claim, error) {
	params := append([]string(nil), r.Params...)
	sort.Strings(params)
	request := [][]byte{[]byte(r.Scope), []byte(r.Key), []byte(r.Method), []byte(r.Path)}
	for _, p := range params {
		request = append(request, []byte(p))
	}
	request = append(request, r.Body)
	c := &Claim{LockFor: lockFor, TTL: ttl}
	var err error
	if c.ScopeHash, err = mac(labelScope, []byte(r.Scope)); err != nil {
		return nil, err
	}
	if c.KeyHash, err = mac(labelKey, []byte(r.Scope), []byte(r.Key)); err != nil {
		return nil, err
	}
	if c.Fingerprint, err = mac(labelRequest, request...); err != nil {
		return nil, err
	}
	if c.BodyKey, err = mac(labelBody, []byte(r.Scope), []byte(r.Key)); err != nil {
		return nil, err
	}
	return c, nil
}

// ValidKey reports whether k is an acceptable Idempotency-Key: 1 to 255
// printable ASCII characters (docs/SECURITY.md, "Idempotency-Key").
func ValidKey(k string) bool {
	if len(k) < 1 || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}
