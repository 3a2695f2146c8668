package sandbox_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/banklinktest"
	"github.com/kluis-dev/kluis/banklink/sandbox"
	"github.com/kluis-dev/kluis/postgres"
)

// TestSandboxPassesTheProviderContract runs banklinktest over the sandbox
// (one database for every subtest: each links items of its own); down, it
// is a sandbox whose database cannot be reached.
func TestSandboxPassesTheProviderContract(t *testing.T) {
	p, _ := newSandbox(t)
	banklinktest.Run(t, func(t *testing.T) banklinktest.Harness {
		return banklinktest.Harness{
			Provider: p,
			Link: func(t *testing.T, _ string, auth bool) string {
				t.Helper()
				inst := sandbox.InstitutionAuth
				if !auth {
					inst = sandbox.InstitutionNoAuth
				}
				pub, err := p.CompleteLink(context.Background(), banklink.SandboxLink{InstitutionID: inst,
					Username: sandbox.GoodUsername, Password: sandbox.GoodPassword})
				if err != nil {
					t.Fatal(err)
				}
				return pub
			},
			LoginRequiredWebhook: func(t *testing.T, providerItemID string) (http.Header, []byte) {
				t.Helper()
				h, body, err := p.SignedWebhook(context.Background(), banklink.SandboxWebhook{ProviderItemID: providerItemID, Code: "ERROR"})
				if err != nil {
					t.Fatal(err)
				}
				return h, body
			},
			Down: func(t *testing.T) banklink.Provider {
				t.Helper()
				// Nothing listens on port 1: every query fails to connect.
				db, err := postgres.Open(context.Background(), "postgres://postgres@127.0.0.1:1/kluis?connect_timeout=1")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(db.Close)
				down, err := sandbox.New(sandbox.Options{DB: db, Secret: secret})
				if err != nil {
					t.Fatal(err)
				}
				return down
			},
		}
	})
}

// keepsTokens is the sandbox with a removal that does nothing: a provider
// that breaks the contract (its tokens outlive an unlink).
type keepsTokens struct{ *sandbox.Provider }

func (keepsTokens) RemoveItem(context.Context, string) error { return nil }

// TestTheContractRefusesAProviderWhoseRemovalKeepsTheToken runs the suite
// over keepsTokens in a child test process and wants it to fail on removal:
// the suite has teeth.
func TestTheContractRefusesAProviderWhoseRemovalKeepsTheToken(t *testing.T) {
	if os.Getenv("KLUIS_CONTRACT_BROKEN_PROVIDER") == "1" {
		p, _ := newSandbox(t)
		banklinktest.Run(t, func(t *testing.T) banklinktest.Harness {
			return banklinktest.Harness{
				Provider: keepsTokens{p},
				Link: func(t *testing.T, _ string, auth bool) string {
					inst := sandbox.InstitutionAuth
					if !auth {
						inst = sandbox.InstitutionNoAuth
					}
					pub, err := p.CompleteLink(context.Background(), banklink.SandboxLink{InstitutionID: inst,
						Username: sandbox.GoodUsername, Password: sandbox.GoodPassword})
					if err != nil {
						t.Fatal(err)
					}
					return pub
				},
			}
		})
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestTheContractRefusesAProviderWhoseRemovalKeepsTheToken$/^removal_kills_the_token$", "-test.v")
	cmd.Env = append(os.Environ(), "KLUIS_CONTRACT_BROKEN_PROVIDER=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--- FAIL: TestTheContractRefusesAProviderWhoseRemovalKeepsTheToken/removal_kills_the_token") {
		t.Fatalf("the suite passed a provider whose removal keeps the token (%v):\n%s", err, out)
	}
}
