package stitch

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// bundlePrefix starts every sealed Stitch credential kluis holds. banklink
// treats the whole bundle as the item's access token (an opaque secret it
// seals, hands back to the adapter, and never shows anyone); only this
// package reads it.
const bundlePrefix = "stitch-v1."

// maxBundleLen bounds a bundle the adapter decodes.
const maxBundleLen = 8192

// bundle is an item's Stitch credential: the user token, the single-use
// refresh token that renews it, when the user token expires, and the
// Stitch user (the item's provider id).
type bundle struct {
	Access  string `json:"a"`
	Refresh string `json:"r"`
	Expires int64  `json:"e"` // Unix seconds
	User    string `json:"u"`
}

// errBundle: the token is not a Stitch bundle (an unknown or foreign token).
var errBundle = errors.New("stitch: not a stitch credential")

func (b bundle) encode() string {
	raw, _ := json.Marshal(b) // a struct of strings and an int: cannot fail
	return bundlePrefix + base64.RawURLEncoding.EncodeToString(raw)
}

func (b bundle) expiresAt() time.Time { return time.Unix(b.Expires, 0).UTC() }

// decodeBundle reads a bundle; anything else is errBundle.
func decodeBundle(s string) (bundle, error) {
	rest, ok := strings.CutPrefix(s, bundlePrefix)
	if !ok || len(s) > maxBundleLen {
		return bundle{}, errBundle
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return bundle{}, errBundle
	}
	var b bundle
	if err := json.Unmarshal(raw, &b); err != nil || b.Access == "" || b.Refresh == "" || b.User == "" || b.Expires <= 0 {
		return bundle{}, errBundle
	}
	return b, nil
}

// callbackPrefix starts the public token the OAuth redirect becomes.
const callbackPrefix = "stitch-code."

// callback is the public token: the authorization code Stitch sent back and
// the state it came with (the verifier is derived from the state, so the
// code is worthless without kluis's key and client secret).
type callback struct {
	State string `json:"s"`
	Code  string `json:"c"`
}

func (c callback) encode() string {
	raw, _ := json.Marshal(c)
	return callbackPrefix + base64.RawURLEncoding.EncodeToString(raw)
}

func decodeCallback(s string) (callback, error) {
	rest, ok := strings.CutPrefix(s, callbackPrefix)
	if !ok || len(s) > maxBundleLen {
		return callback{}, errBundle
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return callback{}, errBundle
	}
	var c callback
	if err := json.Unmarshal(raw, &c); err != nil || c.State == "" || c.Code == "" {
		return callback{}, errBundle
	}
	return c, nil
}
