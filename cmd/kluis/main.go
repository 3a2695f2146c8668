// Command kluis is the one binary of kluis: the server, its migrations, its
// scheduled jobs, audit verification, key rotation, and a development setup.
//
//	kluis serve | console | migrate | jobs list | jobs run NAME | audit verify [--head FILE] | audit head | keys rotate [--new-epoch] | dev | version
//
// Configuration comes from the environment (README).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/vault"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

const usage = `usage: kluis <command>

commands:
  serve          run the public and internal listeners, the audit sealer and the scheduler
  migrate        apply the schema migrations that are not applied yet
  jobs list      list the scheduled jobs and their last runs
  jobs run NAME  run one scheduled job now
                 (retention-purge --dry-run: print per class what would go, delete nothing)
  audit verify   walk the audit chain; exit 1 naming the first bad entry
                 (--head FILE: and check that the chain extends that signed head)
  audit head     print the chain's head, signed, as one line of JSON
  keys rotate [--new-epoch]
                 rewrap keyring keys under the newest root key, move subject
                 keys to the active keyring epoch (a new one with --new-epoch),
                 renew old subject keys; prints its progress
  console        serve the compliance staff console (its own listener; docs/CONSOLE.md)
  dev            a first look on this machine: database, keys, certificates, server
  example-app    serve the example app that uses the hosted pages (development only;
                 docker-compose.yml runs it)
  version        print the version
`

// run executes one command and returns the process's exit code: 0 on
// success, 1 when the command ran and failed, 2 for a usage error.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch {
	case cmd == "serve" && len(rest) == 0:
		err = serve(ctx, getenv, stdout)
	case cmd == "migrate" && len(rest) == 0:
		err = migrate(ctx, getenv, stdout)
	case cmd == "jobs" && len(rest) == 1 && rest[0] == "list":
		err = jobsList(ctx, getenv, stdout)
	case cmd == "jobs" && len(rest) == 2 && rest[0] == "run":
		err = jobsRun(ctx, getenv, stdout, rest[1])
	case cmd == "jobs" && len(rest) == 3 && rest[0] == "run" && rest[1] == "retention-purge" && rest[2] == "--dry-run":
		err = retentionDryRun(ctx, getenv, stdout)
	case cmd == "audit" && len(rest) >= 1 && rest[0] == "verify":
		err = auditVerify(ctx, getenv, stdout, rest[1:])
	case cmd == "audit" && len(rest) == 1 && rest[0] == "head":
		err = auditHead(ctx, getenv, stdout)
	case cmd == "keys" && len(rest) >= 1 && rest[0] == "rotate":
		err = keysRotate(ctx, getenv, stdout, rest[1:])
	case cmd == "console" && len(rest) == 0:
		err = runConsole(ctx, getenv, stdout)
	case cmd == "dev" && len(rest) == 0:
		err = dev(ctx, getenv, stdout)
	case cmd == "example-app" && len(rest) == 0:
		err = exampleApp(ctx, getenv, stdout)
	case cmd == "version" && len(rest) == 0:
		fmt.Fprintln(stdout, "kluis", version)
	case cmd == "help" || cmd == "-h" || cmd == "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
	if errors.Is(err, errUsage) {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "kluis:", failureText(err))
		return 1
	}
	return 0
}

// failureText is what a failed command prints: the error and, when a key
// provider is behind it, the provider's own account of the failure (for
// KMS and Transit a vault.ProviderError: the provider, the operation and its
// status or error code; never key material, a ciphertext or the server's
// message), which kluis.Error keeps out of API answers. Without it an
// operator saw only "key provider unavailable" and could not tell why.
func failureText(err error) string {
	text := err.Error()
	if cause := providerCause(err, text); cause != nil {
		text += " (" + cause.Error() + ")"
	}
	return text
}

// providerCause finds under err the outermost error in kluis's own words
// that carries a key provider's failure (vault.ErrKeyUnavailable or
// vault.ErrKeyRefused) and that printed does not already show: what the
// provider package said, as the log has it. A kluis.Error's message is a
// safe summary that hides its cause, and a join of errors has no words of
// its own, so the search goes on beneath both.
func providerCause(err error, printed string) error {
	if err == nil || err == vault.ErrKeyUnavailable || err == vault.ErrKeyRefused ||
		!(errors.Is(err, vault.ErrKeyUnavailable) || errors.Is(err, vault.ErrKeyRefused)) {
		return nil
	}
	_, summary := err.(*kluis.Error)
	own := !summary && !strings.Contains(printed, err.Error())
	if pe, ok := err.(*vault.ProviderError); ok && own {
		return pe
	}
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if c := providerCause(e, printed); c != nil {
				return c
			}
		}
	case interface{ Unwrap() error }:
		if own {
			return err
		}
		return providerCause(u.Unwrap(), printed)
	}
	if own {
		return err
	}
	return nil
}
