package banklink

import (
	"context"
	"testing"

	"github.com/kluis-dev/kluis"
)

// partialProvider accepts the removal with one token and fails with
// another (unreachable), as a provider down halfway through would.
type partialProvider struct {
	Provider
	removed []string
}

func (p *partialProvider) Name() string { return "partial" }

func (p *partialProvider) RemoveItem(_ context.Context, token string) error {
	if token == "tok_fails" {
		return kluis.Wrap(kluis.EUnavailable, "provider unavailable", ErrProvider)
	}
	p.removed = append(p.removed, token)
	return nil
}

// Issue 10: a version revoked and another failing must not read as
// revoked: the failure is returned, so the caller changes nothing (the item
// stays, with both versions) and the removal is tried again.
func TestRevokeAtProviderReturnsAPartialFailure(t *testing.T) {
	p := &partialProvider{}
	s := &Service{providers: Providers{p}}
	for _, order := range [][]liveToken{
		{{token: "tok_ok", which: "current"}, {token: "tok_fails", which: "pending"}},
		{{token: "tok_fails", which: "current"}, {token: "tok_ok", which: "pending"}},
	} {
		revoked, err := s.revokeAtProvider(context.Background(), p.Name(), order)
		if err == nil || revoked {
			t.Errorf("revokeAtProvider(%s first) = %v, %v; want the failure", order[0].which, revoked, err)
		}
	}
	if len(p.removed) != 2 {
		t.Errorf("removals accepted = %d, want both calls made", len(p.removed))
	}
}
