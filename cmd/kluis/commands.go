package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/migrations"
	"github.com/kluis-dev/kluis/postgres"
)

// migrate applies pending migrations as the owner (KLUIS_MIGRATE_DATABASE_URL,
// or KLUIS_DATABASE_URL in development) and grants the serving role (the
// user of KLUIS_DATABASE_URL) exactly what serving needs
// (migrations.ServingGrants); run twice, the second run applies none.
func migrate(ctx context.Context, getenv func(string) string, out io.Writer) error {
	cfg, err := config.LoadDatabaseOnly(getenv)
	if err != nil {
		return err
	}
	owner := cfg.DatabaseURL
	if cfg.MigrateDatabaseURL != "" {
		owner = cfg.MigrateDatabaseURL
	}
	n, err := migrations.Up(ctx, owner)
	if err != nil {
		return err
	}
	if n == 0 {
		fmt.Fprintln(out, "migrate: the schema is up to date")
	} else {
		fmt.Fprintf(out, "migrate: applied %d migration(s)\n", n)
	}
	res, err := migrations.GrantServing(ctx, owner, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	if res.Skipped {
		fmt.Fprintf(out, "migrate: KLUIS_DATABASE_URL logs in as the owner (%s): no grants to make; production serves as a role that owns nothing (KLUIS_MIGRATE_DATABASE_URL)\n", res.Role)
		return nil
	}
	fmt.Fprintf(out, "migrate: granted the serving role %s what serving needs, and nothing more\n", res.Role)
	return nil
}

// errChainBroken is returned (exit 1) when the audit chain does not verify.
var errChainBroken = errors.New("the audit chain does not verify")

// auditVerify walks the chain and names the first entry that does not match,
// or the problem with the head of FILE (`--head FILE`). Checking a head
// needs the audit-head key, so that form builds kluis as serve does (its
// whole configuration); the plain form needs only the database.
func auditVerify(ctx context.Context, getenv func(string) string, out io.Writer, args []string) error {
	headFile, err := headFlag(args)
	if err != nil {
		return err
	}
	if headFile == "" {
		cfg, err := config.LoadDatabaseOnly(getenv)
		if err != nil {
			return err
		}
		db, err := postgres.Open(ctx, cfg.DatabaseURL)
		if err != nil {
			return err
		}
		defer db.Close()
		res, err := audit.VerifyWith(ctx, db, audit.VerifyOptions{SealInterval: cfg.AuditSealInterval})
		if err != nil {
			return err
		}
		return reportVerify(out, res)
	}
	raw, err := os.ReadFile(headFile) // #nosec G304 -- the operator names the file
	if err != nil {
		return fmt.Errorf("read the head: %w", err)
	}
	head, err := audit.ParseHead(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", headFile, err)
	}
	return withApp(ctx, getenv, func(a *app) error {
		res, err := audit.VerifyWith(ctx, a.db, audit.VerifyOptions{SealInterval: a.cfg.AuditSealInterval, Head: &head, Key: a.sys})
		if err != nil {
			return err
		}
		return reportVerify(out, res)
	})
}

// headFlag reads `--head FILE` or `--head=FILE` from args, the only flag
// audit verify takes.
func headFlag(args []string) (string, error) {
	switch {
	case len(args) == 0:
		return "", nil
	case len(args) == 2 && args[0] == "--head" && args[1] != "":
		return args[1], nil
	case len(args) == 1 && strings.HasPrefix(args[0], "--head=") && len(args[0]) > len("--head="):
		return strings.TrimPrefix(args[0], "--head="), nil
	}
	return "", errUsage
}

// errUsage makes run print the usage and exit 2.
var errUsage = errors.New("usage")

func reportVerify(out io.Writer, res audit.VerifyResult) error {
	if !res.OK {
		switch {
		case res.Problem == audit.ProblemChain:
			fmt.Fprintf(out, "audit verify: BROKEN at entry seq %d (chain position %d): %s\n", *res.FirstBadSeq, *res.FirstBadPos, res.Reason)
			fmt.Fprintf(out, "audit verify: %d entries verified before it\n", res.Entries)
			return fmt.Errorf("%w: first bad entry seq %d", errChainBroken, *res.FirstBadSeq)
		default:
			fmt.Fprintf(out, "audit verify: FAILED (%s): %s\n", res.Problem, res.Reason)
			return fmt.Errorf("%w: %s", errChainBroken, res.Reason)
		}
	}
	fmt.Fprintf(out, "audit verify: ok, %d entries chained, %d not yet sealed", res.Entries, res.Unsealed)
	if res.Head != "" {
		fmt.Fprintf(out, ", the chain extends the head (%s)", res.Head)
	}
	fmt.Fprintln(out)
	return nil
}

// auditHead prints the chain's head now, signed under the audit-head key,
// as one line of JSON, for keeping outside the database.
func auditHead(ctx context.Context, getenv func(string) string, out io.Writer) error {
	return withApp(ctx, getenv, func(a *app) error {
		h, err := audit.CurrentHead(ctx, a.db, a.sys)
		if err != nil {
			return err
		}
		line, err := json.Marshal(h)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, string(line))
		return nil
	})
}

// withApp builds kluis from its whole configuration for a one-off command
// that needs the key provider, and closes it after fn.
func withApp(ctx context.Context, getenv func(string) string, fn func(*app) error) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	logger, err := newLogger(cfg, io.Discard)
	if err != nil {
		return err
	}
	a, err := build(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer a.close()
	return fn(a)
}
