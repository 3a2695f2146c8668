package main

import (
	"slices"
	"testing"

	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/api/idempotency"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/hosted"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
)

// TestKluisLoadsEveryPartsSystemKeysOnce: the names kluis loads are the
// vault's and each feature's (the vault names none of the features'),
// verification's stored key once though two features name it, and the
// same list the api tests load.
func TestKluisLoadsEveryPartsSystemKeysOnce(t *testing.T) {
	names := systemKeyNames()
	for _, want := range slices.Concat(vault.DefaultSystemKeys, verification.SystemKeys(), banklink.SystemKeys(),
		idempotency.SystemKeys(), hosted.SystemKeys()) {
		if !slices.Contains(names, want) {
			t.Errorf("system key %q is not loaded", want)
		}
	}
	for _, feature := range []string{verification.SystemKey, banklink.SystemKey, banklink.SystemKeyHeld, idempotency.SystemKey, hosted.SystemKey} {
		if slices.Contains(vault.DefaultSystemKeys, feature) {
			t.Errorf("the vault names the system key %q of another part", feature)
		}
	}
	if len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Errorf("a name is listed twice: %v", names)
	}
	api := apitest.SystemKeyNames()
	slices.Sort(api)
	if !slices.Equal(slices.Compact(api), names) {
		t.Errorf("apitest loads %v, kluis %v", api, names)
	}
}
