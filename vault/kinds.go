package vault

import (
	"fmt"
	"slices"
	"strings"
)

// Kind is a kind of credential a feature keeps in the vault
// (credentials.kind). The vault knows no bank or country: each feature
// registers the kinds it stores (banklink its access tokens and account
// numbers, verification the holder's ID number), and cmd/kluis hands the
// list to NewKinds.
type Kind struct {
	// Name is the credentials.kind value; it is bound into every
	// envelope, so a registered name never changes.
	Name string
	// Owner is the owner type a credential of the kind belongs to
	// (OwnerItem or OwnerAccount); Seal and every open check it.
	Owner string
	// Index, when set, lets a credential of the kind carry a blind index
	// (Seal's blindIndexInput, FindByBlindIndex).
	Index *BlindIndex
	// Withheld, when set, is why a subject's complete export lists a
	// credential of the kind without opening it (compliance): a
	// credential kluis holds to act for the person is not information
	// about them.
	Withheld string
	// Revealable says a service policy may allow the kind to be revealed
	// to a service (reveal.kinds). Off by default: a kind only kluis's own
	// features open (a holder's ID number) can never be revealed. At most
	// one revealable kind per owner type, so that an owner's pointer
	// names what it leads to (RevealableOwnedBy).
	Revealable bool
}

// BlindIndex says how a kind's values are indexed: HMAC-SHA256 under the
// blind-index system key of Label and the normalised value.
type BlindIndex struct {
	// Label separates this kind's indexes from every other's (an account
	// number and an ID number with the same digits must not index alike).
	// It is part of every stored index: a registered label never changes.
	// It must start with "kluis/blind-index/".
	Label string
	// Normalize returns the form that is indexed ("0001 2345-67" and
	// "0001234567" alike), or "" for a value that cannot be indexed.
	Normalize func(string) string
}

// blindIndexLabelPrefix keeps a kind's label apart from the vault's other
// MAC labels (pseudonyms, MAC, audit heads).
const blindIndexLabelPrefix = "kluis/blind-index/"

// Kinds is the registry of credential kinds the vault accepts. Built once
// (NewKinds) and read-only after, so it is safe for concurrent use. A kind
// not registered is refused by Seal and fails every owner check.
type Kinds struct {
	byName map[string]Kind
}

// NewKinds checks and registers kinds: names unique and not empty, a known
// owner type, and each index with a normaliser and a label of its own.
func NewKinds(kinds ...Kind) (*Kinds, error) {
	r := &Kinds{byName: make(map[string]Kind, len(kinds))}
	labels := map[string]bool{}
	revealable := map[string]bool{} // by owner type
	for _, k := range kinds {
		if k.Revealable {
			if revealable[k.Owner] {
				return nil, fmt.Errorf("vault: credential kind %q: a second revealable kind for owner type %q", k.Name, k.Owner)
			}
			revealable[k.Owner] = true
		}
		if k.Name == "" || (k.Owner != OwnerItem && k.Owner != OwnerAccount) {
			return nil, fmt.Errorf("vault: credential kind %q: a name and an owner type (item or account) are required", k.Name)
		}
		if _, dup := r.byName[k.Name]; dup {
			return nil, fmt.Errorf("vault: credential kind %q registered twice", k.Name)
		}
		if ix := k.Index; ix != nil {
			if ix.Normalize == nil || !strings.HasPrefix(ix.Label, blindIndexLabelPrefix) || len(ix.Label) == len(blindIndexLabelPrefix) || labels[ix.Label] {
				return nil, fmt.Errorf("vault: credential kind %q: a blind index needs a normaliser and a label of its own under %q", k.Name, blindIndexLabelPrefix)
			}
			labels[ix.Label] = true
		}
		r.byName[k.Name] = k
	}
	return r, nil
}

// MustKinds is NewKinds for a list fixed in the code; it panics on a
// mistake in that list.
func MustKinds(kinds ...Kind) *Kinds {
	r, err := NewKinds(kinds...)
	if err != nil {
		panic(err)
	}
	return r
}

// Lookup returns the registered kind of that name.
func (r *Kinds) Lookup(name string) (Kind, bool) {
	if r == nil {
		return Kind{}, false
	}
	k, ok := r.byName[name]
	return k, ok
}

// RevealableOwnedBy is the revealable kind an owner of ownerType holds
// (what a reveal by the owner's pointer opens), or "" when it holds none.
func (r *Kinds) RevealableOwnedBy(ownerType string) string {
	if r == nil {
		return ""
	}
	for _, k := range r.byName {
		if k.Revealable && k.Owner == ownerType {
			return k.Name
		}
	}
	return ""
}

// Revealable lists the kinds a service policy may name, sorted.
func (r *Kinds) Revealable() []string {
	var out []string
	if r != nil {
		for _, k := range r.byName {
			if k.Revealable {
				out = append(out, k.Name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// ownerType is the owner type of the named kind; "" for an unknown kind,
// which no owner matches.
func (r *Kinds) ownerType(name string) string {
	k, _ := r.Lookup(name)
	return k.Owner
}

// blindIndex is the blind index of value for a credential of the named
// kind, or nil when the kind has no index, value normalises to nothing or
// the blind-index key is not loaded (callers refuse a nil index).
func (r *Kinds) blindIndex(sys *SystemKeys, kind, value string) []byte {
	k, ok := r.Lookup(kind)
	if !ok || k.Index == nil || sys == nil {
		return nil
	}
	norm := k.Index.Normalize(value)
	if norm == "" {
		return nil
	}
	idx, err := sys.mac(SystemKeyBlindIndex, k.Index.Label, []byte(norm))
	if err != nil {
		return nil
	}
	return idx
}
