package main

import (
	"context"
	"fmt"
	"io"
)

// clientRunCmd is 'falocal run': a fal client for the shell.
func clientRunCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "falocal run: not built yet")
	return 2
}
