package banklink

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kluis-dev/kluis"
)

// Providers is the registry of the bank providers kluis runs with, keyed by
// the name each item and link session records (items.provider), in the
// order of KLUIS_BANK_PROVIDERS: the first is the default for a link
// session that names none. It has the shape of kratos's
// selfservice/strategy Strategies: a list built once, explicitly, by the
// wiring (no init() registers a provider), and looked up by name.
//
// Every call about an item goes to the item's own provider: a provider
// that is not configured (any more) answers kluis.EUnavailable for its
// items, never another provider's answer.
type Providers []Provider

// NewProviders checks that every provider has a name of its own and returns
// them as a registry; ps must not be empty.
func NewProviders(ps ...Provider) (Providers, error) {
	if len(ps) == 0 {
		return nil, errors.New("banklink: at least one bank provider is required")
	}
	seen := map[string]bool{}
	for _, p := range ps {
		if p == nil || p.Name() == "" {
			return nil, errors.New("banklink: every bank provider needs a name")
		}
		if seen[p.Name()] {
			return nil, fmt.Errorf("banklink: bank provider %q is configured twice", p.Name())
		}
		seen[p.Name()] = true
	}
	return append(Providers(nil), ps...), nil
}

// Default is the first configured provider.
func (ps Providers) Default() Provider { return ps[0] }

// Names lists the configured providers' names, in order.
func (ps Providers) Names() []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name()
	}
	return out
}

// Lookup returns the provider called name, and whether it is configured.
func (ps Providers) Lookup(name string) (Provider, bool) {
	for _, p := range ps {
		if p.Name() == name {
			return p, true
		}
	}
	return nil, false
}

// Provider returns the provider an item or session records. One that is not
// configured is kluis.EUnavailable: the item is not lost, but kluis cannot
// reach its provider until the operator configures it again (an unlink or
// an erasure then fails and changes nothing, as with a provider that is
// down).
func (ps Providers) Provider(name string) (Provider, error) {
	if p, ok := ps.Lookup(name); ok {
		return p, nil
	}
	return nil, kluis.Unavailable("bank provider", fmt.Errorf("%w: %q is not among the configured providers (%s)",
		ErrProvider, clip(name), strings.Join(ps.Names(), ", ")))
}

// Sandbox returns the sandbox's Link stand-in when the sandbox is among the
// providers (its own routes exist only then).
func (ps Providers) Sandbox() (SandboxLinker, bool) {
	for _, p := range ps {
		if l, ok := p.(SandboxLinker); ok {
			return l, true
		}
	}
	return nil, false
}

// maxProviderNameLen bounds a provider name a caller sends.
const maxProviderNameLen = 32

// sessionProvider is the provider a new link session asks for: the default
// when name is empty; one not configured is EInvalid, naming the field.
func (s *Service) sessionProvider(name string) (Provider, error) {
	if name == "" {
		return s.providers.Default(), nil
	}
	if p, ok := s.providers.Lookup(name); ok && len(name) <= maxProviderNameLen {
		return p, nil
	}
	return nil, kluis.Errorf(kluis.EInvalid, "provider must be one of the configured bank providers: %s",
		strings.Join(s.providers.Names(), ", "))
}

// updateProvider is the provider of an update-mode session: the item's own.
// A caller that names another is EInvalid: an item's login is repaired
// only where it was made.
func (s *Service) updateProvider(it Item, name string) (Provider, error) {
	if name != "" && name != it.Provider {
		return nil, kluis.Errorf(kluis.EInvalid, "provider must be the item's own provider in update mode (or left out)")
	}
	return s.providers.Provider(it.Provider)
}

// sandboxLinker is the sandbox's Link stand-in for a session or an item of
// provider; for anything not linked through the sandbox it is ENotFound,
// as if the sandbox route did not know it.
func (s *Service) sandboxLinker(provider string) (SandboxLinker, error) {
	p, ok := s.providers.Lookup(provider)
	if !ok {
		return nil, notFound()
	}
	l, ok := p.(SandboxLinker)
	if !ok {
		return nil, notFound()
	}
	return l, nil
}

// UnconfiguredProviders lists the providers that live items were linked
// through but that are not configured: their items answer 503 to every call
// that needs the provider (unlink and erasure included) until the operator
// configures them again. Start-up warns about them.
func (s *Service) UnconfiguredProviders(ctx context.Context) ([]string, error) {
	names, err := liveItemProviders(ctx, s.db.Pool)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if _, ok := s.providers.Lookup(n); !ok {
			out = append(out, n)
		}
	}
	return out, nil
}
