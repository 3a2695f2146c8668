package vault

import (
	"strings"
	"testing"
)

// The kinds the vault's own tests seal: the names and index labels banklink
// and verification register (the vault cannot import them), so that these
// tests exercise the same bindings and indexes kluis stores.
const (
	KindBankAccessToken = "bank_access_token"
	KindAccountNumber   = "account_number"
	KindIDNumber        = "id_number"
)

func digitsOnly(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, s)
}

var testKinds = MustKinds(
	Kind{Name: KindBankAccessToken, Owner: OwnerItem, Withheld: "a provider token", Revealable: true},
	Kind{Name: KindAccountNumber, Owner: OwnerAccount, Revealable: true, Index: &BlindIndex{Label: "kluis/blind-index/account-number/v1", Normalize: digitsOnly}},
	Kind{Name: KindIDNumber, Owner: OwnerAccount, Index: &BlindIndex{Label: "kluis/blind-index/id-number/v1", Normalize: digitsOnly}},
)

// OwnerTypeOf is the owner type of a test kind.
func OwnerTypeOf(kind string) string { return testKinds.ownerType(kind) }

func TestNewKindsRefusesAmbiguousRegistrations(t *testing.T) {
	idx := func(label string) *BlindIndex { return &BlindIndex{Label: label, Normalize: digitsOnly} }
	tests := []struct {
		name  string
		kinds []Kind
	}{
		{"no name", []Kind{{Owner: OwnerItem}}},
		{"no owner type", []Kind{{Name: "k"}}},
		{"an unknown owner type", []Kind{{Name: "k", Owner: "subject"}}},
		{"a name twice", []Kind{{Name: "k", Owner: OwnerItem}, {Name: "k", Owner: OwnerAccount}}},
		{"an index without a normaliser", []Kind{{Name: "k", Owner: OwnerAccount, Index: &BlindIndex{Label: "kluis/blind-index/k/v1"}}}},
		{"a label outside the blind-index space", []Kind{{Name: "k", Owner: OwnerAccount, Index: idx(labelPseudonym)}}},
		{"the bare prefix as label", []Kind{{Name: "k", Owner: OwnerAccount, Index: idx(blindIndexLabelPrefix)}}},
		{"two revealable kinds for one owner type", []Kind{
			{Name: "a", Owner: OwnerAccount, Revealable: true},
			{Name: "b", Owner: OwnerAccount, Revealable: true},
		}},
		{"one label for two kinds", []Kind{
			{Name: "a", Owner: OwnerAccount, Index: idx("kluis/blind-index/x/v1")},
			{Name: "b", Owner: OwnerAccount, Index: idx("kluis/blind-index/x/v1")},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewKinds(tt.kinds...); err == nil {
				t.Fatal("registered; want an error")
			}
		})
	}
}

func TestAnUnregisteredKindHasNoOwnerAndNoIndex(t *testing.T) {
	if got := testKinds.ownerType("password"); got != "" {
		t.Fatalf("owner type of an unknown kind = %q, want none", got)
	}
	var none *Kinds
	if _, ok := none.Lookup(KindAccountNumber); ok {
		t.Fatal("a nil registry found a kind")
	}
	if testKinds.blindIndex(nil, KindAccountNumber, "123") != nil {
		t.Fatal("a blind index without the system keys")
	}
}

// A kind is revealable only when its registration says so: the holder's ID
// number never is, and an owner's pointer leads to its one revealable kind.
func TestOnlyRegisteredRevealableKindsCanBeRevealed(t *testing.T) {
	if got := testKinds.Revealable(); len(got) != 2 || got[0] != KindAccountNumber || got[1] != KindBankAccessToken {
		t.Fatalf("revealable kinds = %v, want the account number and the access token", got)
	}
	if testKinds.RevealableOwnedBy(OwnerAccount) != KindAccountNumber || testKinds.RevealableOwnedBy(OwnerItem) != KindBankAccessToken {
		t.Fatal("an owner's pointer must lead to its revealable kind")
	}
	if testKinds.RevealableOwnedBy("subject") != "" {
		t.Fatal("an unknown owner type holds nothing revealable")
	}
}
