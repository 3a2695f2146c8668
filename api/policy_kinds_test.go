package api

import (
	"slices"
	"testing"

	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/verification"
)

// The kinds a policy may name are exactly the kinds the features register
// as revealable: a new kind is not revealable until its registration says
// so, and the holder's ID number never is.
func TestThePolicysKindsAreTheRegisteredRevealableKinds(t *testing.T) {
	kinds := vault.MustKinds(slices.Concat(banklink.CredentialKinds(), verification.CredentialKinds())...)
	got := slices.Sorted(slices.Values(knownKinds))
	if want := kinds.Revealable(); !slices.Equal(got, want) {
		t.Fatalf("policy kinds = %v, registered revealable kinds = %v", got, want)
	}
	if slices.Contains(got, verification.KindIDNumber) {
		t.Fatal("a policy may never name the holder's ID number")
	}
}
