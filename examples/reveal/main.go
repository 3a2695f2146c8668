// Command reveal is an example internal service: it reveals an item's bank
// access token from kluis over mutual TLS, for a purpose its policy allows,
// and uses it (here: reports that it has it, never printing it).
//
//	KLUIS_INTERNAL_URL=https://127.0.0.1:8081 \
//	SERVICE_CERT=payments.crt SERVICE_KEY=payments.key KLUIS_CA=ca.crt \
//	go run ./examples/reveal -item itm_… -purpose payment_initiation
//
// `kluis dev` writes a sample service's certificate (payments.crt and
// payments.key, allowed bank_access_token for payment_initiation) and its
// CA (ca.crt) to .kluis-dev/, and its sample requests link an item.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/kluis-dev/kluis/client"
)

func main() {
	item := flag.String("item", "", "the item whose access token to reveal (itm_…)")
	purpose := flag.String("purpose", "payment_initiation", "why: a purpose the service policy allows this service")
	flag.Parse()
	if *item == "" {
		log.Fatal("reveal: -item is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *item, *purpose); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, itemID, purpose string) error {
	c, err := client.New(client.Config{
		BaseURL: env("KLUIS_INTERNAL_URL", "https://127.0.0.1:8081"),
		TLS: &client.TLSFiles{
			CertFile: os.Getenv("SERVICE_CERT"),
			KeyFile:  os.Getenv("SERVICE_KEY"),
			CAFile:   os.Getenv("KLUIS_CA"),
		},
		// A 503 or 429 with Retry-After is retried by the client itself
		// (reveal carries an Idempotency-Key); wait at most this long.
		Retry: client.RetryPolicy{MaxWait: 10 * time.Second},
	})
	if err != nil {
		return err
	}
	tok, err := c.RevealItemToken(ctx, itemID, purpose)
	var kerr *client.Error
	switch {
	case errors.As(err, &kerr) && kerr.Reason == "credential_revoked":
		return fmt.Errorf("reveal: the user withdrew consent for %s at the bank: ask them to link again", itemID)
	case errors.As(err, &kerr) && kerr.Status == 403:
		return fmt.Errorf("reveal: the service policy does not let this service reveal bank access tokens for %q", purpose)
	case err != nil:
		return fmt.Errorf("reveal: %w", err)
	}
	// The reveal names the credential's owner: check it is the item asked
	// about before using the secret.
	if tok.Owner != (client.Owner{Type: "item", ID: itemID}) {
		return fmt.Errorf("reveal: kluis answered for %s %s, not %s", tok.Owner.Type, tok.Owner.ID, itemID)
	}
	// A real service would call the provider with tok.Secret.AccessToken
	// here; the example only says that it could.
	fmt.Printf("revealed the %s access token of %s (%d characters)\n", tok.Secret.Provider, itemID, len(tok.Secret.AccessToken))
	return nil
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
