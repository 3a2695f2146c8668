package banklink

import (
	"github.com/kluis-dev/kluis/banklink/accountnumber"
	"github.com/kluis-dev/kluis/vault"
)

// KindAccessToken is an item's access token at its provider
// ({"access_token": …}), a credential kind bank linking keeps in the vault
// (credentials.kind). The name is bound into every envelope: it never
// changes. Accounts' numbers are accountnumber.Kind.
const KindAccessToken = "bank_access_token"

// accessTokenWithheld is why a subject's complete export leaves access
// tokens unopened.
const accessTokenWithheld = "a credential kluis holds to reach the bank on the person's behalf: not information about them, and whoever held it could read their bank data (GDPR Art. 15(4))"

// CredentialKinds are the kinds bank linking registers with the vault
// (cmd/kluis hands them to vault.NewKinds).
func CredentialKinds() []vault.Kind {
	return []vault.Kind{
		{Name: KindAccessToken, Owner: vault.OwnerItem, Withheld: accessTokenWithheld, Revealable: true},
		accountnumber.CredentialKind(),
	}
}
