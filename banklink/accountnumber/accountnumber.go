// Package accountnumber is bank linking's credential kind for account
// numbers: its name, how numbers are normalised for the blind index, and
// its registration with the vault. It is a leaf (it imports only the
// vault) so that verification, which seals manual accounts' numbers, can
// use the same kind without importing banklink, which imports
// verification for its ports.
package accountnumber

import "github.com/kluis-dev/kluis/vault"

// Kind is an account's numbers ({"account_number": …, …}), blind-indexed by
// its digits so that the same number linked twice, or entered by hand, is
// found again. The name is bound into every envelope: it never changes.
const Kind = "account_number"

// indexLabel separates account numbers' blind indexes from every other
// kind's. Part of every stored index: never change it.
const indexLabel = "kluis/blind-index/account-number/v1"

// CredentialKind is the kind's registration with the vault
// (banklink.CredentialKinds lists it).
func CredentialKind() vault.Kind {
	return vault.Kind{Name: Kind, Owner: vault.OwnerAccount, Revealable: true,
		Index: &vault.BlindIndex{Label: indexLabel, Normalize: Normalize}}
}

// Normalize keeps only the ASCII digits of a number, so that
// "0001 2345-67" and "0001234567" index alike.
func Normalize(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			out = append(out, s[i])
		}
	}
	return string(out)
}
