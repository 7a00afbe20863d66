//go:build cuda

package main

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/internal/metrics"
)

// TestSetupGPUDevice needs a GPU (bench/gpu/check.sh runs it there): the
// pool opens on the card, the default budget comes from the card's memory,
// /metrics carries the pool's series, and the scheduler trims the pool.
func TestSetupGPUDevice(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := &Config{memoryBudget: 1 << 20}
	m := metrics.New()
	budget, g := setupGPU(c, "cuda:0", log, m)
	if g == nil {
		t.Fatal("no GPU pool opened")
	}
	defer func() {
		if err := g.close(); err != nil {
			t.Error(err)
		}
	}()
	avail, err := g.pool.Budget()
	if err != nil {
		t.Fatal(err)
	}
	if budget <= 1<<20 || budget > avail || budget < avail/2 {
		t.Fatalf("budget %d for %d available on the card (total %d)", budget, avail, g.total)
	}
	t.Logf("card: %d MiB total, %d MiB available, model budget %d MiB", g.total>>20, avail>>20, budget>>20)

	// A 64 MiB block freed into the cache, then a model that needs all but
	// 32 MiB of what is free: the scheduler must hand the block back.
	p, err := g.pool.Alloc(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.pool.Free(p); err != nil {
		t.Fatal(err)
	}
	if g.pool.Cached() != 64<<20 {
		t.Fatalf("cached %d", g.pool.Cached())
	}
	avail, _ = g.pool.Budget()
	res := engine.NewResidency(0, -1, "cuda:0", log)
	res.UseDevice(g.pool)
	need := avail - 32<<20
	release, err := res.Unit("big", need, engine.UnitOptions{}).Admit(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	release()
	if c := g.pool.Cached(); c != 0 {
		t.Errorf("cache %d after admitting a model needing %d of %d", c, need, avail)
	}

	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "falocal_vram_") {
			names = append(names, f.GetName())
		}
	}
	if len(names) < 5 {
		t.Errorf("vram series in /metrics: %v", names)
	}
}
