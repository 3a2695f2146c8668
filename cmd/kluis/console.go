package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/kluis-dev/kluis/console"
	"github.com/kluis-dev/kluis/logging"
)

// runConsole serves the compliance staff console (docs/CONSOLE.md) until ctx
// ends. It needs no database: it speaks to kluis's compliance API only.
func runConsole(ctx context.Context, getenv func(string) string, out io.Writer) error {
	s, err := console.FromEnv(getenv)
	if err != nil {
		return fmt.Errorf("console configuration:\n%w", err)
	}
	s.Logger = logging.New(out, 0)
	srv, err := console.New(ctx, s.Config)
	if err != nil {
		return err
	}
	hs := &http.Server{Addr: s.Addr, Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute}
	errs := make(chan error, 1)
	go func() { errs <- hs.ListenAndServeTLS(s.CertFile, s.KeyFile) }()
	s.Logger.Info("console listening", "addr", s.Addr, "public_url", s.PublicURL)
	select {
	case err := <-errs:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
