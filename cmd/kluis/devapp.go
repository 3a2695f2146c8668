package main

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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
// user, and prints its URL and a hosted link URL to open directly.
func serveDevApp(ctx context.Context, out io.Writer, public string, signer *ecdsa.PrivateKey) {
	kluisURL := "http://" + public
	token := func() (string, error) {
		return mintDev(signer, jwt.MapClaims{"sub": "user_dev_1", "aud": "kluis"}), nil
	}
	h := exampleapp.Handler(exampleapp.Options{KluisURL: kluisURL, AppURL: "http://" + devAppAddr,
		Integrity: api.LinkJSIntegrity, Token: token})
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
