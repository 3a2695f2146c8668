package banklink

import "github.com/kluis-dev/kluis/vault"

// Credential kinds bank linking keeps in the vault (credentials.kind).
// They are bound into every envelope: the names never change.
const (
	// KindAccessToken is an item's access token at its provider
	// ({"access_token": …}).
	KindAccessToken = "bank_access_token"
	// KindAccountNumber is an account's numbers ({"account_number": …,
	// …}), blind-indexed by its digits so that the same number linked
	// twice, or entered by hand (verification), is found again.
	KindAccountNumber = "account_number"
)

// accountNumberIndexLabel separates account numbers' blind indexes from
// every other kind's. Part of every stored index: never change it.
const accountNumberIndexLabel = "kluis/blind-index/account-number/v1"

// accessTokenWithheld is why a subject's complete export leaves access
// tokens unopened.
const accessTokenWithheld = "a credential kluis holds to reach the bank on the person's behalf: not information about them, and whoever held it could read their bank data (GDPR Art. 15(4))"

// CredentialKinds are the kinds bank linking registers with the vault
// (cmd/kluis hands them to vault.NewKinds).
func CredentialKinds() []vault.Kind {
	return []vault.Kind{
		{Name: KindAccessToken, Owner: vault.OwnerItem, Withheld: accessTokenWithheld},
		{Name: KindAccountNumber, Owner: vault.OwnerAccount, Index: &vault.BlindIndex{
			Label: accountNumberIndexLabel, Normalize: NormalizeAccountNumber,
		}},
	}
}

// NormalizeAccountNumber keeps only the ASCII digits of an account number,
// so that "0001 2345-67" and "0001234567" index alike.
func NormalizeAccountNumber(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			out = append(out, s[i])
		}
	}
	return string(out)
}
