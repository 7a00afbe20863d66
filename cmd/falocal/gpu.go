package main

import (
	"log/slog"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/vram"
	"github.com/falocal/falocal/engine/vram/vrammetrics"
	"github.com/falocal/falocal/internal/metrics"
)

// gpu is the device memory the server manages itself beside ONNX Runtime's
// own: the pool for buffers that stay on the card between model calls.
type gpu struct {
	pool  *vram.Pool
	total int64
	close func() error
}

// deviceFraction of the card's free memory is the default model budget on
// a GPU: the rest is left for the pool's buffers, the CUDA context and
// ONNX Runtime's workspace.
const deviceFraction = 0.9

// setupGPU opens the device when a GPU provider is in use and the binary
// carries the CUDA code: the residency scheduler then trims the pool's
// cache when models need the room, /metrics exports the pool, and the
// memory budget, unless given in bytes, is reckoned from the card rather
// than from RAM. It returns the budget to use and the gpu (nil on the
// CPU, or when the device cannot be opened: ONNX Runtime's CUDA provider
// still runs then, with the budget from RAM). The pool's series go on m's
// registry (none when m is nil).
func setupGPU(c *Config, device string, log *slog.Logger, m *metrics.Metrics) (int64, *gpu) {
	budget := c.memoryBudget
	if device == "cpu" {
		return budget, nil
	}
	if !gpuBuilt {
		log.Info("built without -tags cuda: no VRAM pool or own CUDA kernels; ONNX Runtime's provider manages the card's memory",
			"device", device)
		return budget, nil
	}
	g, err := openGPU(c.DeviceID, log)
	if err != nil {
		log.Warn("GPU memory pool unavailable", "device", device, "err", err)
		return budget, nil
	}
	if reg := m.Registry(); reg != nil {
		if unregister, err := vrammetrics.Register(reg, g.pool, device); err != nil {
			log.Warn("GPU pool metrics", "err", err)
		} else {
			closePool := g.close
			g.close = func() error {
				unregister()
				return closePool()
			}
		}
	}
	avail, err := g.pool.Budget()
	if err != nil {
		log.Warn("device memory", "err", err)
		return budget, g
	}
	budget, err = deviceBudget(c.MemoryBudget, avail, g.total)
	if err != nil {
		// The same text parsed against RAM at start-up; this cannot differ.
		log.Warn("memory budget", "err", err)
		budget = c.memoryBudget
	}
	return budget, g
}

// deviceBudget reads -memory-budget for a GPU: unset is deviceFraction of
// the memory available now, a percentage is of the card's total, bytes
// are bytes.
func deviceBudget(s string, avail, total int64) (int64, error) {
	if s == "" {
		return int64(float64(avail) * deviceFraction), nil
	}
	return parseBudget(s, total)
}

var _ engine.DeviceMemory = (*vram.Pool)(nil)
