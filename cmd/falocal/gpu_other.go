//go:build !cuda

package main

import (
	"errors"
	"log/slog"
)

const gpuBuilt = false

func openGPU(int, *slog.Logger) (*gpu, error) {
	return nil, errors.New("built without -tags cuda")
}
