package vault

import (
	"bytes"
	"context"
	"testing"
)

// An ID number is a credential kind of its own: sealed and opened like an
// account number, found by a blind index that never equals the index of an
// account number with the same digits.
func TestIDNumbersAreSealedAndIndexedApartFromAccountNumbers(t *testing.T) {
	t.Parallel()
	v := newTestVault(t, CacheOptions{})
	alice := v.subject(t, "alice")
	const id = "8001015009087"
	idRef := v.seal(t, alice, KindIDNumber, `{"id_number":"`+id+`"}`, id)
	acctRef := v.seal(t, alice, KindAccountNumber, `{"account_number":"`+id+`"}`, id)

	cred, err := v.store.Open(context.Background(), idRef)
	if err != nil {
		t.Fatal(err)
	}
	defer cred.Zero()
	if cred.Kind != KindIDNumber || !bytes.Contains(cred.Secret, []byte(id)) {
		t.Fatalf("opened %v", cred)
	}
	found, err := v.store.FindByBlindIndex(context.Background(), v.db.Pool, KindIDNumber, id)
	if err != nil || len(found) != 1 || found[0].Ref != idRef {
		t.Fatalf("found %+v (%v), want only %s", found, err, idRef)
	}
	if n := v.count(t, `SELECT count(*) FROM credentials a JOIN credentials b ON a.blind_index = b.blind_index
		WHERE a.ref = $1 AND b.ref = $2`, idRef, acctRef); n != 0 {
		t.Fatal("an ID number and an account number of the same digits index alike")
	}
	if n := v.count(t, `SELECT count(*) FROM credentials WHERE position($1::bytea in envelope) > 0`, []byte(id)); n != 0 {
		t.Fatal("the ID number is stored in the clear")
	}
}
