// Package cuda implements kernels.Kernels on an NVIDIA GPU through the CUDA
// driver API (gorgonia.org/cu).
//
// The device code is built only with -tags cuda, which needs cgo, CUDA 12.x
// headers (cuda.h) and libcuda (or its link stub) at build time; without the
// tag New returns ErrCUDANotBuilt and nothing here needs cgo. A binary built
// with the tag exits at start-up on a machine without a working driver:
// gorgonia.org/cu calls os.Exit(1) from init() when cuInit fails.
//
// This file has no build tag so that both builds share one API.
package cuda

import "errors"

// ErrCUDANotBuilt is returned by New in builds without -tags cuda.
var ErrCUDANotBuilt = errors.New("kernels/cuda: rebuild with -tags cuda; needs CUDA 12.x headers and libcuda")

// ErrClosed is returned by a Device used after Close.
var ErrClosed = errors.New("kernels/cuda: device closed")

// Option configures New.
type Option func(*config)

type config struct {
	ordinal int
	ptx     map[string]string
	ptxSet  bool
}

// WithOrdinal selects the device by CUDA ordinal (default 0).
func WithOrdinal(i int) Option { return func(c *config) { c.ordinal = i } }

// WithPTX replaces the PTX modules embedded by package kernels (keyed as
// kernels.PTX() keys them), for tests and experiments. Nil or empty means
// no modules: every operation runs the CPU reference.
func WithPTX(modules map[string]string) Option {
	return func(c *config) { c.ptx, c.ptxSet = modules, true }
}
