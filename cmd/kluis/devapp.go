package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/exampleapp"
)

// devAppAddr is where `kluis dev` serves the example app (docs/HOSTED.md):
// a frontend page that links and verifies a sandbox account through the
// hosted pages and the drop-in. Its origin is the dev KLUIS_APP_ORIGINS.
const devAppAddr = "127.0.0.1:8090"

// serveDevApp serves the example app until ctx ends, acting for the dev
// user and offering the bank providers kluis is configured with
// (providers, the default first), and prints its URL and a hosted link URL
// to open directly.
func serveDevApp(ctx context.Context, out io.Writer, public string, signer *ecdsa.PrivateKey, providers []string) {
	kluisURL := "http://" + public
	token := devUserToken(signer)
	h := devApp(kluisURL, providers, token)
	ln, err := net.Listen("tcp", devAppAddr)
	if err != nil {
		fmt.Fprintf(out, "\nThe example app could not listen on %s: %v\n", devAppAddr, err)
		return
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	fmt.Fprintf(out, "\nThe example app (links and verifies a sandbox account with clicks): http://%s/\n", devAppAddr)
	if link, err := devHostedLink(ctx, kluisURL, token); err == nil {
		fmt.Fprintf(out, "A hosted link page for user_dev_1 (opens once, for %s): %s\n", "30 minutes", link)
	}
}

// devUserToken mints tokens for the dev user, as the app's identity
// provider would.
func devUserToken(signer *ecdsa.PrivateKey) func() (string, error) {
	return func() (string, error) {
		return mintDev(signer, jwt.MapClaims{"sub": "user_dev_1", "aud": "kluis"}), nil
	}
}

// devApp is the example app as `kluis dev` serves it: its page offers the
// providers kluis links through (a menu when there are several) and its
// backend names the user's choice when it creates the link session, so
// every configured provider's hosted step can be tried with clicks.
func devApp(kluisURL string, providers []string, token func() (string, error)) http.Handler {
	return exampleapp.Handler(exampleapp.Options{KluisURL: kluisURL, AppURL: "http://" + devAppAddr,
		Integrity: api.LinkJSIntegrity, Token: token, Providers: providers})
}

// devHostedLink starts a link session for the dev user and returns its
// hosted_link_url.
func devHostedLink(ctx context.Context, kluisURL string, token func() (string, error)) (string, error) {
	tok, _ := token()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, kluisURL+"/v1/link/sessions", strings.NewReader(`{"products":["auth"]}`))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var s struct {
		HostedLinkURL string `json:"hosted_link_url"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || s.HostedLinkURL == "" {
		return "", fmt.Errorf("no hosted_link_url (%d)", resp.StatusCode)
	}
	return s.HostedLinkURL, nil
}

// exampleApp is `kluis example-app`: the example app alone, for
// docker-compose.yml (development only). It signs the demo user's tokens
// with `kluis dev`'s key (KLUIS_EXAMPLE_SIGNING_KEY, default
// .kluis-dev/token-signing.pem: the key behind the JWKS kluis trusts).
//
//   - KLUIS_EXAMPLE_ADDR: where it listens (default 127.0.0.1:8090)
//   - KLUIS_EXAMPLE_APP_URL: its own origin as browsers reach it (default http:// and the address)
//   - KLUIS_EXAMPLE_KLUIS_URL: kluis's public listener as browsers reach it (default http://127.0.0.1:8080)
//   - KLUIS_EXAMPLE_API_URL: kluis as the app's backend reaches it (default KLUIS_EXAMPLE_KLUIS_URL)
//   - KLUIS_EXAMPLE_PROVIDERS: the bank providers its page offers, as kluis's
//     KLUIS_BANK_PROVIDERS lists them (default: none named, so kluis's default)
func exampleApp(ctx context.Context, getenv func(string) string, out io.Writer) error {
	if getenv("KLUIS_ENV") == "production" {
		return fmt.Errorf("kluis example-app is for development only and refuses KLUIS_ENV=production")
	}
	addr := firstSet(getenv("KLUIS_EXAMPLE_ADDR"), devAppAddr)
	keyFile := firstSet(getenv("KLUIS_EXAMPLE_SIGNING_KEY"), devDir+"/token-signing.pem")
	signer, err := readDevSigner(keyFile)
	if err != nil {
		return fmt.Errorf("example-app: the token-signing key %s (made by `make dev`): %w", keyFile, err)
	}
	kluisURL := firstSet(getenv("KLUIS_EXAMPLE_KLUIS_URL"), "http://127.0.0.1:8080")
	h := exampleapp.Handler(exampleapp.Options{KluisURL: kluisURL, APIURL: getenv("KLUIS_EXAMPLE_API_URL"),
		AppURL: firstSet(getenv("KLUIS_EXAMPLE_APP_URL"), "http://"+addr), Integrity: api.LinkJSIntegrity,
		Token: devUserToken(signer), Providers: splitList(getenv("KLUIS_EXAMPLE_PROVIDERS"))})
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	fmt.Fprintf(out, "example app on http://%s/\n", addr)
	if err := srv.ListenAndServe(); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// readDevSigner reads `kluis dev`'s token-signing key.
func readDevSigner(keyFile string) (*ecdsa.PrivateKey, error) {
	raw, err := os.ReadFile(keyFile) // #nosec G304 -- the operator names the development key file
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("%s is not PEM", keyFile)
	}
	return x509.ParseECPrivateKey(block.Bytes)
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty names.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
