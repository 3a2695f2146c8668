package banklink

import (
	"slices"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidlink"
)

// Products a link session may ask for: the products providers accept when
// a link starts. Balance is not one (Plaid refuses it in
// /link/token/create: balances come with every item), so it is refused
// here, naming the field, rather than forwarded to fail at the provider.
var knownProducts = []string{"auth", "transactions", "identity"}

// maxAccountSubtypes bounds account_filters.
const maxAccountSubtypes = 10

// LinkOptions are what an app asks of one link session.
type LinkOptions struct {
	// Products default to ["auth"].
	Products []string
	// ItemID is set for update mode.
	ItemID string
	// Provider names one of the configured bank providers (empty: the
	// default; in update mode the item's own).
	Provider string
	// AccountSubtypes limits the depository accounts Link offers
	// (plaidlink.DepositorySubtypes).
	AccountSubtypes []string
	// AccountSelection (update mode only) lets the user pick accounts
	// again, which is how new accounts are added with real Plaid.
	AccountSelection bool
	// Platform is PlatformWeb (default), PlatformIOS or PlatformAndroid.
	Platform string
	// Link are the Link settings of the user's app (its name, countries,
	// language, OAuth return); empty fields keep the provider's own.
	Link plaidlink.Settings
	// RedirectURI is where the hosted page sends the browser back when it
	// was opened by redirect: an absolute http(s) URL without userinfo or
	// fragment. Whether its origin is one of the app's is the API's to
	// check (it knows the configured origins).
	RedirectURI string
}

// normalize checks o and fills in defaults; a bad field is EInvalid with
// the field named in the message.
func (o LinkOptions) normalize() (LinkOptions, error) {
	if len(o.Products) == 0 {
		o.Products = []string{"auth"}
	}
	if len(o.Products) > maxProducts {
		return o, kluis.Errorf(kluis.EInvalid, "products: too many products")
	}
	for _, p := range o.Products {
		if p == "balance" {
			return o, kluis.Errorf(kluis.EInvalid, "products: balance is not a product a link starts with (balances come with every item); leave it out")
		}
		if !slices.Contains(knownProducts, p) {
			return o, kluis.Errorf(kluis.EInvalid, "products: may hold only auth, transactions and identity")
		}
	}
	o.Products = dedupe(o.Products)
	if len(o.AccountSubtypes) > maxAccountSubtypes {
		return o, kluis.Errorf(kluis.EInvalid, "account_filters.depository: too many subtypes")
	}
	for _, st := range o.AccountSubtypes {
		if !plaidlink.Contains(plaidlink.DepositorySubtypes, st) {
			return o, kluis.Errorf(kluis.EInvalid, "account_filters.depository: unknown account subtype")
		}
	}
	o.AccountSubtypes = dedupe(o.AccountSubtypes)
	if o.AccountSelection && o.ItemID == "" {
		return o, kluis.Errorf(kluis.EInvalid, "account_selection: only in update mode (with item_id)")
	}
	if err := checkRedirectURI(o.RedirectURI); err != nil {
		return o, err
	}
	switch o.Platform {
	case "":
		o.Platform = PlatformWeb
	case PlatformWeb, PlatformIOS, PlatformAndroid:
	default:
		return o, kluis.Errorf(kluis.EInvalid, "platform: must be web, ios or android")
	}
	return o, nil
}

// dedupe keeps the first of each value, in order.
func dedupe(in []string) []string {
	out := make([]string, 0, len(in))
	for _, v := range in {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}
