package banklink

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis"
)

// fixedMACs is a MACer with one fixed key per name: HMAC-SHA256 of the
// parts, each length-prefixed. It stands in for vault.SystemKeys (whose
// MAC is unchanged) so that a derivation can be written out by hand.
type fixedMACs struct{}

func (fixedMACs) MAC(name string, parts ...[]byte) ([]byte, error) {
	m := hmac.New(sha256.New, []byte("fixed key of "+name))
	for _, p := range parts {
		m.Write([]byte{byte(len(p) >> 8), byte(len(p))})
		m.Write(p)
	}
	return m.Sum(nil), nil
}

// TestTheValuesProvidersHoldAreDerivedAsBeforeBankLinkingHadItsOwnKey pins
// client_user_id to the derivation every earlier release used: the stored
// key named "verification" (which vault.SystemKeyVerification named), the
// label "kluis/banklink/client-user-id" and the subject id, "kluis-" and
// 16 bytes of hex. Plaid and Stitch hold these values with the users'
// items; another derivation would make every existing user a stranger to
// their provider.
func TestTheValuesProvidersHoldAreDerivedAsBeforeBankLinkingHadItsOwnKey(t *testing.T) {
	if SystemKeyHeld != "verification" {
		t.Fatalf("SystemKeyHeld = %q: it names a stored key, whose name never changes", SystemKeyHeld)
	}
	s := &Service{keys: fixedMACs{}}
	got, err := s.clientUserID("sub_4e1b")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := fixedMACs{}.MAC("verification", []byte("kluis/banklink/client-user-id"), []byte("sub_4e1b"))
	if want := "kluis-" + hex.EncodeToString(m[:16]); got != want {
		t.Fatalf("client_user_id = %s, want %s (as derived before)", got, want)
	}
}

// TestAnOAuthStateMadeBeforeTheUpgradeIsStillAccepted: a state made under
// SystemKeyHeld (an earlier release, a user at their bank during the
// upgrade) finds its session; a new state is made under SystemKey; a
// state under any other key, or for another session, is refused.
func TestAnOAuthStateMadeBeforeTheUpgradeIsStillAccepted(t *testing.T) {
	s := &Service{keys: fixedMACs{}}
	id := kluis.NewID(kluis.PrefixLinkSession)
	held, err := s.oauthStateUnder(SystemKeyHeld, id)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := s.oauthState(id)
	if err != nil {
		t.Fatal(err)
	}
	own, _ := s.oauthStateUnder(SystemKey, id)
	if fresh != own || fresh == held {
		t.Fatalf("a new state is not made under banklink's own key")
	}
	for _, state := range []string{held, fresh} {
		if got, err := s.sessionOfState(state); err != nil || got != id {
			t.Fatalf("state %q: %q, %v", state, got, err)
		}
	}
	other, _ := s.oauthStateUnder("hosted-page", id)
	another, _ := s.oauthStateUnder(SystemKeyHeld, kluis.NewID(kluis.PrefixLinkSession))
	for _, state := range []string{other, id + "." + strings.SplitN(another, ".", 2)[1]} {
		if _, err := s.sessionOfState(state); kluis.ErrorCode(err) == "" {
			t.Fatalf("state %q was accepted", state)
		}
	}
}

// TestAPublicTokenSealedBeforeTheUpgradeStillOpens: a session's public
// token sealed under SystemKeyHeld opens; a new one is sealed under
// SystemKey; one sealed for another session does not open.
func TestAPublicTokenSealedBeforeTheUpgradeStillOpens(t *testing.T) {
	s := &Service{keys: fixedMACs{}}
	id := kluis.NewID(kluis.PrefixLinkSession)
	gcm, err := s.publicTokenKey(SystemKeyHeld, id)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, gcm.NonceSize())
	old := gcm.Seal(nonce, nonce, []byte("public-sandbox-old"), []byte(id))
	if tok, err := s.openPublicToken(id, old); err != nil || tok != "public-sandbox-old" {
		t.Fatalf("held seal: %q, %v", tok, err)
	}
	sealed, err := s.sealPublicToken(id, "public-sandbox-new")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.openPublicTokenUnder(SystemKey, id, sealed); err != nil {
		t.Fatalf("a new seal is not under banklink's own key: %v", err)
	}
	if _, err := s.openPublicToken(kluis.NewID(kluis.PrefixLinkSession), old); err == nil {
		t.Fatal("a sealed token opened under another session")
	}
}
