package main

import (
	"context"
	"errors"
	"io"
)

// doctorCmd is 'falocal doctor': checks of this machine, each with a fix.
func doctorCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("doctor: not built yet")
}
