package main

import (
	"context"
	"errors"
	"io"
)

// Placeholders until the scheduler lands; see jobs/.
func jobsList(ctx context.Context, getenv func(string) string, out io.Writer) error {
	return errors.New("jobs list: the scheduler is not built yet")
}

func jobsRun(ctx context.Context, getenv func(string) string, out io.Writer, name string) error {
	return errors.New("jobs run: the scheduler is not built yet")
}

func keysRotate(ctx context.Context, getenv func(string) string, out io.Writer) error {
	return errors.New("keys rotate: not built yet")
}
