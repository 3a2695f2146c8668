package banklink_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
)

// named is a Provider that only has a name: the registry asks nothing else.
type named struct {
	banklink.Provider
	name string
}

func (n named) Name() string { return n.name }

// sandboxLike also plays the sandbox's Link UI.
type sandboxLike struct {
	named
}

func (sandboxLike) CompleteLink(context.Context, banklink.SandboxLink) (string, error) {
	return "", nil
}
func (sandboxLike) SignedWebhook(context.Context, banklink.SandboxWebhook) (http.Header, []byte, error) {
	return nil, nil, nil
}

func TestTheProviderRegistry(t *testing.T) {
	refused := []struct {
		name string
		ps   []banklink.Provider
	}{
		{"no provider", nil},
		{"a provider without a name", []banklink.Provider{named{name: "plaid"}, named{}}},
		{"a nil provider", []banklink.Provider{nil}},
		{"one name twice", []banklink.Provider{named{name: "plaid"}, named{name: "sandbox"}, named{name: "plaid"}}},
	}
	for _, tt := range refused {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			if _, err := banklink.NewProviders(tt.ps...); err == nil {
				t.Fatal("accepted")
			}
		})
	}

	ps, err := banklink.NewProviders(named{name: "plaid"}, sandboxLike{named{name: "sandbox"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("the first is the default and the order is kept", func(t *testing.T) {
		if ps.Default().Name() != "plaid" || strings.Join(ps.Names(), ",") != "plaid,sandbox" {
			t.Fatalf("default %q, names %v", ps.Default().Name(), ps.Names())
		}
	})
	t.Run("each name finds its own provider", func(t *testing.T) {
		for _, name := range []string{"plaid", "sandbox"} {
			p, err := ps.Provider(name)
			if err != nil || p.Name() != name {
				t.Fatalf("%s: %v", name, err)
			}
		}
	})
	t.Run("an item of a provider no longer configured is unavailable, never another's", func(t *testing.T) {
		for _, name := range []string{"stitch", "", "Plaid"} {
			p, err := ps.Provider(name)
			if p != nil || kluis.ErrorCode(err) != kluis.EUnavailable || !errors.Is(err, banklink.ErrProvider) {
				t.Fatalf("%q: %v, %v", name, p, err)
			}
		}
	})
	t.Run("the sandbox is found among them", func(t *testing.T) {
		if _, ok := ps.Sandbox(); !ok {
			t.Fatal("no sandbox")
		}
		only, _ := banklink.NewProviders(named{name: "plaid"})
		if _, ok := only.Sandbox(); ok {
			t.Fatal("a sandbox without one configured")
		}
	})
}
