package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/transit/transittest"
)

// transitKluis is kluis configured for the in-test Transit server, built
// as `kluis serve` builds it, with subjects credentials sealed through it.
type transitKluis struct {
	srv  *transittest.Server
	env  map[string]string
	app  *app
	refs []string
}

func startTransitKluis(t *testing.T, subjects int) *transitKluis {
	t.Helper()
	srv := transittest.NewServer(t)
	t.Setenv("VAULT_ADDR", srv.URL) // the Vault client reads the process environment
	t.Setenv("VAULT_TOKEN", transittest.DefaultToken)
	k := &transitKluis{srv: srv, env: map[string]string{
		"KLUIS_DATABASE_URL": pgtest.New(t), "KLUIS_KEY_PROVIDER": "transit",
		"KLUIS_JWT_JWKS_FILE": jwttest.WriteJWKS(t, jwttest.DefaultKeys()...),
		"KLUIS_JWT_ISSUER":    jwttest.Issuer, "KLUIS_LOG_LEVEL": "error",
	}}
	cfg, err := config.Load(func(name string) string { return k.env[name] })
	if err != nil {
		t.Fatal(err)
	}
	logger, _ := newLogger(cfg, io.Discard)
	if k.app, err = build(context.Background(), cfg, logger); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.app.close)
	for i := range subjects {
		k.refs = append(k.refs, k.seal(t, fmt.Sprintf("user-%d", i)))
	}
	return k
}

func (k *transitKluis) seal(t testing.TB, sub string) string {
	ctx := context.Background()
	var ref string
	err := k.app.db.InTx(ctx, func(tx pgx.Tx) error {
		subjectID, err := vault.EnsureSubject(ctx, tx, sub)
		if err != nil {
			return err
		}
		ref, err = k.app.store.Seal(ctx, tx, vault.ItemOwner(kluis.NewID(kluis.PrefixItem)), subjectID,
			banklink.KindAccessToken, []byte(`{"access_token":"t"}`), "")
		return err
	})
	if err != nil {
		t.Errorf("seal: %v", err)
	}
	return ref
}

// Issue 13: with the Transit key just rotated and kluis serving (opening
// and sealing), `kluis keys rotate` failed about half the time with "key
// provider unavailable" and nothing rewrapped: vault/api cancelled each
// write's context before its answer was read, so a rewrap batch whose
// answer arrived in pieces could not be read. The server here sends every
// answer in two pieces, so the old code failed every time.
func TestKeysRotateWorksWhileKluisServesOnTransit(t *testing.T) {
	k := startTransitKluis(t, 150)
	k.srv.SetSlowAnswers(20 * time.Millisecond)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var served atomic.Int64
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; ctx.Err() == nil; i++ {
				if _, err := k.app.store.Open(ctx, k.refs[i%len(k.refs)]); err != nil && ctx.Err() == nil {
					t.Errorf("open while rotating: %v", err)
					return
				}
				if i%8 == 0 {
					k.seal(t, fmt.Sprintf("new-%d-%d", g, i))
				}
				served.Add(1)
			}
		}()
	}
	for round := range 2 {
		k.srv.Rotate(transittest.DefaultKey)
		code, out, errOut := runKluis(t, k.env, "keys", "rotate")
		if code != 0 || !strings.Contains(out, "succeeded") || !strings.Contains(out, "rewrapped_keys=") {
			t.Fatalf("round %d: keys rotate = %d %q %q", round, code, out, errOut)
		}
	}
	stop()
	wg.Wait()
	if served.Load() == 0 {
		t.Fatal("nothing was served during the rotations")
	}
	// The root wraps only keyring and system keys (subject keys are wrapped
	// by the keyring key): none is left on the oldest version.
	var oldest int
	if err := k.app.db.Pool.QueryRow(context.Background(),
		`SELECT (SELECT count(*) FROM keystore.keyring_keys WHERE root_version = '1') + (SELECT count(*) FROM keystore.system_keys WHERE root_version = '1')`).Scan(&oldest); err != nil || oldest != 0 {
		t.Fatalf("%d keys still on root version 1 (%v)", oldest, err)
	}
}

// A command that fails because of the key provider prints the provider's
// own account of it, never a secret.
func TestAFailedCommandPrintsTheProvidersOwnError(t *testing.T) {
	k := startTransitKluis(t, 1)
	k.srv.SetToken("another-token", 0, false)
	code, _, errOut := runKluis(t, k.env, "keys", "rotate")
	if code != 1 || !strings.Contains(errOut, "transit: decrypt: HTTP 403 (permission denied)") {
		t.Fatalf("keys rotate against a Vault that refuses the token = %d %q, want the provider's error", code, errOut)
	}
	if strings.Contains(errOut, transittest.DefaultToken) || strings.Contains(errOut, "vault:v1:") {
		t.Fatalf("the error shows a secret: %q", errOut)
	}
}

func TestFailureTextShowsTheProvidersWordsBeneathTheSummary(t *testing.T) {
	transitErr := &vault.ProviderError{Provider: "transit", Op: "rewrap", What: "HTTP 503 (sealed)", Sentinel: vault.ErrKeyUnavailable}
	localErr := fmt.Errorf("localkek: wrapped key does not open under this root key and key id: %w", vault.ErrKeyRefused)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"a job that failed on Transit",
			kluis.Wrap(kluis.EUnavailable, "job key-rotation failed: key provider unavailable, try again later",
				kluis.Unavailable("key provider", fmt.Errorf("vault: rewrap keys: %w", transitErr))),
			"kluis: unavailable: job key-rotation failed: key provider unavailable, try again later (vault: rewrap keys: transit: rewrap: HTTP 503 (sealed): vault: key provider unavailable)"},
		{"the local key refusing at start",
			fmt.Errorf("%w: %w", errKeysRefused, kluis.Wrap(kluis.EInternal, "internal error", fmt.Errorf("vault: unwrap system key blind-index: %w", localErr))),
			errKeysRefused.Error() + ": kluis: internal: internal error (vault: unwrap system key blind-index: " + localErr.Error() + ")"},
		{"a provider error already in the text", fmt.Errorf("load system keys: %w", transitErr), "load system keys: " + transitErr.Error()},
		{"no provider behind it", kluis.Errorf(kluis.ENotFound, "no job named x"), "kluis: not_found: no job named x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := failureText(tt.err); got != tt.want {
				t.Fatalf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// `kluis keys rotate --new-epoch` starts a keyring epoch, moves every
// subject key to it locally and prints its progress; reveals go on.
func TestKeysRotateNewEpochPrintsItsProgress(t *testing.T) {
	k := startTransitKluis(t, 30)
	before := k.srv.TotalCalls()
	code, out, errOut := runKluis(t, k.env, "keys", "rotate", "--new-epoch")
	if code != 0 || !strings.Contains(out, "keyring epoch 2 (new): 30 subject keys re-wrapped") || !strings.Contains(out, "succeeded") {
		t.Fatalf("keys rotate --new-epoch = %d %q %q", code, out, errOut)
	}
	// The command builds its own kluis (system keys, keyring) and then makes
	// one key, whatever the number of subjects: a few calls, not 30.
	if got := k.srv.TotalCalls() - before; got > 20 {
		t.Fatalf("a new epoch over 30 subjects made %d Transit calls", got)
	}
	for _, ref := range k.refs {
		if _, err := k.app.store.Open(context.Background(), ref); err != nil {
			t.Fatalf("open after the new epoch: %v", err)
		}
	}
	if code, _, errOut := runKluis(t, k.env, "keys", "rotate", "--bogus"); code == 0 || !strings.Contains(errOut, "--new-epoch") {
		t.Fatalf("keys rotate --bogus = %d %q", code, errOut)
	}
}
