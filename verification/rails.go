package verification

import (
	"context"
	"errors"
	"fmt"
	"sort"
)

// setRails keeps the default rail, the rails by provider, and every rail by
// its own name: a verification's row names the rail its deposits went
// over, and polls and resends go back to that one.
func (s *Service) setRails(def Rail, byProvider map[string]Rail) error {
	s.rail, s.rails, s.railsByName = def, byProvider, map[string]Rail{}
	all := []Rail{def}
	for _, name := range sortedNames(byProvider) {
		all = append(all, byProvider[name])
	}
	for _, r := range all {
		if r == nil {
			continue
		}
		if r.Name() == "" {
			return errors.New("verification: every rail needs a name")
		}
		if other, ok := s.railsByName[r.Name()]; ok && other != r {
			return fmt.Errorf("verification: two different rails are called %q", r.Name())
		}
		s.railsByName[r.Name()] = r
	}
	return nil
}

// railFor is the rail that carries the account's micro-deposits: with
// Rails set, its item's provider's (none if that provider has none), and
// the default rail for a manual account; without Rails, the default rail
// for every account. nil: micro-deposits are not available.
func (s *Service) railFor(ctx context.Context, a Account) (Rail, error) {
	if a.ItemID == "" || s.rails == nil {
		return s.rail, nil
	}
	provider, _, err := s.accounts.ItemProvider(ctx, a.ItemID)
	if err != nil {
		return nil, err
	}
	return s.rails[provider], nil
}

func sortedNames[T any](m map[string]T) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
