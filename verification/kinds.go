package verification

import (
	"github.com/kluis-dev/kluis/banklink/accountnumber"
	"github.com/kluis-dev/kluis/vault"
)

// KindIDNumber is a person's national identity number ({"id_number"}),
// such as a South African ID number given with a manual account, which the
// bank checks with the account (BAV). No service policy may reveal it
// (api's revealable kinds leave it out): only verification opens it, to
// send it to the bank that checks it. The name is bound into every
// envelope: it never changes.
const KindIDNumber = "id_number"

// idNumberIndexLabel separates ID numbers' blind indexes from account
// numbers': a 13-digit account number and an ID number with the same
// digits must not index alike, or a copy of the table would show which of
// a person's numbers is their ID number. Never change it.
const idNumberIndexLabel = "kluis/blind-index/id-number/v1"

// CredentialKinds are the kinds verification registers with the vault
// (cmd/kluis hands them to vault.NewKinds). Manual accounts' numbers are
// accountnumber.Kind, registered by banklink.
func CredentialKinds() []vault.Kind {
	return []vault.Kind{{Name: KindIDNumber, Owner: vault.OwnerAccount, Index: &vault.BlindIndex{
		Label: idNumberIndexLabel, Normalize: accountnumber.Normalize, // the digits, as an account number's
	}}}
}
