package main

import (
	"slices"
	"testing"

	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
)

// TestKluisLoadsEveryPartsSystemKeysOnce: the names kluis loads are the
// vault's and each feature's (the vault names none of the features'),
// verification's stored key once though two features name it, and the
// same list the api tests load.
func TestKluisLoadsEveryPartsSystemKeysOnce(t *testing.T) {
	names := systemKeyNames()
	for _, want := range slices.Concat(vault.DefaultSystemKeys, verification.SystemKeys(), banklink.SystemKeys()) {
		if !slices.Contains(names, want) {
			t.Errorf("system key %q is not loaded", want)
		}
	}
	if slices.Contains(vault.DefaultSystemKeys, verification.SystemKey) || slices.Contains(vault.DefaultSystemKeys, banklink.SystemKey) {
		t.Error("the vault names a feature's system key")
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
