package banklink

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
)

// The system keys bank linking keys its MACs under (vault.SystemKeys;
// cmd/kluis gathers every feature's names, SystemKeys, and loads them).
// Every MAC is domain-separated by a label of its own ("kluis/banklink/…").
const (
	// SystemKey is bank linking's own key, for what lives no longer than
	// a link session and is checked by kluis alone: the OAuth state, the
	// hash of a public token (link_sessions.public_token_hash) and the key
	// that seals it (public_token_sealed). What an earlier release made
	// under SystemKeyHeld is still accepted while such a session can live
	// (acceptHeld): an upgrade breaks no link under way.
	SystemKey = "banklink"
	// SystemKeyHeld is the stored key named "verification" (made by the
	// first releases, when the vault kept one key that verification and
	// bank linking shared). What is derived from it is held where kluis
	// cannot re-derive it, so it must stay derived from this key for as
	// long as the values live (docs/ENVELOPE.md, "System keys"):
	//   - client_user_id: the pseudonym each provider knows a subject by;
	//     Plaid and Stitch keep it with the user's items;
	//   - Stitch's PKCE key (cmd/kluis): Stitch holds the code challenge of
	//     each authorization under way;
	//   - the sandbox provider's secret (cmd/kluis): it derives the account
	//     numbers of the sandbox items already linked and signs their
	//     webhooks.
	// Verification keys its own MACs under the same stored key
	// (verification.SystemKey); the two features name it each for itself.
	SystemKeyHeld = "verification"
)

// SystemKeys are the names of the system keys bank linking needs loaded.
func SystemKeys() []string { return []string{SystemKey, SystemKeyHeld} }

// acceptHeld: values of SystemKey's derivations made before bank linking
// had its own key (under SystemKeyHeld) are accepted, so that a link
// session that spans the upgrade completes. A session lives at most
// NewSessionTTL (UpdateSessionTTL), so this can go in the release after the
// one that made SystemKey.
const acceptHeld = true

// publicTokenHash is what link_sessions keeps of a public token.
func (s *Service) publicTokenHash(token string) ([]byte, error) {
	return s.mac(SystemKey, "public-token", []byte(token))
}

// storedTokenHash returns, of the public token's hashes, the one a
// session's row holds: hash (under SystemKey), or the hash under
// SystemKeyHeld an earlier release stored (acceptHeld). A row without a
// hash, or with another token's, gets hash: the comparisons that follow
// refuse it as before.
func (s *Service) storedTokenHash(stored, hash []byte, token string) ([]byte, error) {
	if !acceptHeld || len(stored) == 0 || sameHash(stored, hash) {
		return hash, nil
	}
	held, err := s.mac(SystemKeyHeld, "public-token", []byte(token))
	if err != nil {
		return nil, err
	}
	if sameHash(stored, held) {
		return held, nil
	}
	return hash, nil
}

// clientUserID is the pseudonym a provider knows the subject by. It stays
// under SystemKeyHeld: providers hold the values already given.
func (s *Service) clientUserID(subjectID string) (string, error) {
	m, err := s.mac(SystemKeyHeld, "client-user-id", []byte(subjectID))
	if err != nil {
		return "", err
	}
	return "kluis-" + hex.EncodeToString(m[:16]), nil
}

// oauthStateUnder is a session's OAuth state with its MAC under the named
// key.
func (s *Service) oauthStateUnder(key, sessionID string) (string, error) {
	m, err := s.mac(key, "oauth-state", []byte(sessionID))
	if err != nil {
		return "", err
	}
	return sessionID + "." + base64.RawURLEncoding.EncodeToString(m[:24]), nil
}

// validState says whether state is the session's OAuth state, under
// SystemKey or (acceptHeld) under SystemKeyHeld, compared in constant time.
func (s *Service) validState(sessionID, state string) (bool, error) {
	keys := []string{SystemKey}
	if acceptHeld {
		keys = append(keys, SystemKeyHeld)
	}
	for _, key := range keys {
		want, err := s.oauthStateUnder(key, sessionID)
		if err != nil {
			return false, err
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(state)) == 1 {
			return true, nil
		}
	}
	return false, nil
}
