package api

import "testing"

// No service may be given ID numbers: a policy naming the kind does not
// load, so a typo cannot open them either.
func TestAPolicyCannotGrantIDNumbers(t *testing.T) {
	t.Parallel()
	doc := "services:\n  kyc:\n    reveal:\n      kinds: [id_number]\n      purposes: [kyc]\n"
	if _, err := ParsePolicy([]byte(doc)); err == nil {
		t.Fatal("a policy that reveals id_number loaded")
	}
	ok := "services:\n  kyc:\n    reveal:\n      kinds: [account_number]\n      purposes: [kyc]\n"
	if _, err := ParsePolicy([]byte(ok)); err != nil {
		t.Fatalf("the same policy with account_number: %v", err)
	}
}
