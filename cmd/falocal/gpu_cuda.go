//go:build cuda

package main

import (
	"fmt"
	"log/slog"

	"github.com/falocal/falocal/engine/vram"
	"github.com/falocal/falocal/kernels/cuda"
)

// gpuBuilt says this binary carries the CUDA kernels and the VRAM pool.
const gpuBuilt = true

// openGPU opens CUDA device ordinal and a caching memory pool over it.
func openGPU(ordinal int, log *slog.Logger) (*gpu, error) {
	d, err := cuda.New(cuda.WithOrdinal(ordinal))
	if err != nil {
		return nil, fmt.Errorf("CUDA device %d: %w", ordinal, err)
	}
	name, _ := d.Name()
	free, total, err := d.MemInfo()
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("CUDA device %d: %w", ordinal, err)
	}
	log.Info("cuda device", "ordinal", ordinal, "name", name, "free", free, "total", total)
	pool := vram.New(d.Allocator(), vram.Options{})
	return &gpu{pool: pool, total: total, close: func() error {
		err := pool.Close()
		if cerr := d.Close(); err == nil {
			err = cerr
		}
		return err
	}}, nil
}
