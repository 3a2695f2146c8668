package stitch_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink/stitch"
	"github.com/kluis-dev/kluis/banklink/stitch/stitchtest"
)

// TestABankAccountVerificationNamesExactlyOneDocument: the holder goes to
// Stitch as an identity document (country ZA) or a passport with its
// country, as Stitch's IdentifyingDocumentInput takes exactly one; anything
// else is refused before a request is made, and the input never prints.
func TestABankAccountVerificationNamesExactlyOneDocument(t *testing.T) {
	ctx := context.Background()
	srv := stitchtest.NewServer(t)
	p := newProvider(t, srv)
	base := stitch.BAVInput{AccountNumber: "1479260001", BankID: "za_capitec", AccountType: "savings", HolderName: "Lindiwe Nomsa Dube"}

	id := base
	id.IDNumber = "8001015009087"
	if r, err := p.VerifyBankAccountDetails(ctx, id); err != nil || !isTrue(r.IDNumberMatches) || !isTrue(r.LastNameMatches) {
		t.Fatalf("with an ID number: %+v %v", r, err)
	}
	pp := base
	pp.PassportNumber, pp.PassportCountry = "FN4826173", "ZW"
	if r, err := p.VerifyBankAccountDetails(ctx, pp); err != nil || !isTrue(r.IDNumberMatches) {
		t.Fatalf("with a passport: %+v %v", r, err)
	}
	want := []stitchtest.BAVDocument{{Kind: "identityDocument", Country: "ZA"}, {Kind: "passport", Country: "ZW"}}
	if got := srv.BAVDocuments(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Stitch was sent %v, want %v", got, want)
	}

	both := pp
	both.IDNumber = id.IDNumber
	half := base
	half.PassportNumber = pp.PassportNumber
	for name, in := range map[string]stitch.BAVInput{"neither": base, "both": both, "a passport without its country": half} {
		if _, err := p.VerifyBankAccountDetails(ctx, in); kluis.ErrorCode(err) != kluis.EInvalid {
			t.Fatalf("%s: err = %v, want invalid", name, err)
		}
	}
	if n := len(srv.BAVDocuments()); n != 2 {
		t.Fatalf("refused input reached Stitch (%d requests)", n)
	}
	for _, s := range []string{fmt.Sprint(both), fmt.Sprintf("%+v", both), fmt.Sprintf("%#v", both)} {
		if strings.Contains(s, "FN4826173") || strings.Contains(s, "8001015009087") || strings.Contains(s, "1479260001") {
			t.Fatalf("BAVInput prints its secrets: %s", s)
		}
	}
}

func isTrue(b *bool) bool { return b != nil && *b }
