package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/migrations"
	"github.com/kluis-dev/kluis/postgres"
)

// migrate applies pending migrations; run twice, the second run applies none.
func migrate(ctx context.Context, getenv func(string) string, out io.Writer) error {
	cfg, err := config.LoadDatabaseOnly(getenv)
	if err != nil {
		return err
	}
	n, err := migrations.Up(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	if n == 0 {
		fmt.Fprintln(out, "migrate: the schema is up to date")
		return nil
	}
	fmt.Fprintf(out, "migrate: applied %d migration(s)\n", n)
	return nil
}

// errChainBroken is returned (exit 1) when the audit chain does not verify.
var errChainBroken = errors.New("the audit chain does not verify")

// auditVerify seals what is pending, walks the chain and names the first
// entry that does not match.
func auditVerify(ctx context.Context, getenv func(string) string, out io.Writer) error {
	cfg, err := config.LoadDatabaseOnly(getenv)
	if err != nil {
		return err
	}
	db, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer db.Close()
	res, err := compliance.Verify(ctx, db)
	if err != nil {
		return err
	}
	if !res.OK {
		fmt.Fprintf(out, "audit verify: BROKEN at entry seq %d (chain position %d): %s\n", *res.FirstBadSeq, *res.FirstBadPos, res.Reason)
		fmt.Fprintf(out, "audit verify: %d entries verified before it\n", res.Entries)
		return fmt.Errorf("%w: first bad entry seq %d", errChainBroken, *res.FirstBadSeq)
	}
	fmt.Fprintf(out, "audit verify: ok, %d entries chained, %d not yet sealed\n", res.Entries, res.Unsealed)
	return nil
}
