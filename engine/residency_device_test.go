package engine_test

import (
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/vram"
	"github.com/falocal/falocal/engine/vram/vramtest"
)

// devicePool makes a pool over a fake 1000 MiB card holding n freed blocks
// of 192 MiB (a size class of its own) in its cache.
func devicePool(t *testing.T, n int) *vram.Pool {
	t.Helper()
	p := vram.New(vramtest.New(1000<<20), vram.Options{})
	var ptrs []uintptr
	for range n {
		q, err := p.Alloc(192 << 20)
		if err != nil {
			t.Fatal(err)
		}
		ptrs = append(ptrs, q)
	}
	for _, q := range ptrs {
		if err := p.Free(q); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.Cached(); got != int64(n)*192<<20 {
		t.Fatalf("cached %d, want %d blocks of 192 MiB", got, n)
	}
	return p
}

var _ engine.DeviceMemory = (*vram.Pool)(nil)

func TestResidencyTrimsDevicePool(t *testing.T) {
	sizes := map[string]int64{"small": 300, "large": 500}
	cases := []struct {
		name       string
		run        string
		fails      map[string]int
		wantCached int64 // MiB left in the pool's cache
	}{
		// 424 MiB free on the card: enough, the cache stays.
		{"fits in free memory", "small", nil, 576},
		// 76 MiB short: one block goes back.
		{"short by less than a block", "large", nil, 384},
		// The load fails once with no other model to evict: the cache is
		// emptied and the load retried.
		{"load failure empties the cache", "small", map[string]int{"small": 1}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 1000, -1, sizes, nil, tc.fails)
			pool := devicePool(t, 3)
			c.res.UseDevice(pool)
			if err := c.run(t, tc.run); err != nil {
				t.Fatal(err)
			}
			if got := pool.Cached() >> 20; got != tc.wantCached {
				t.Errorf("cached %d MiB, want %d", got, tc.wantCached)
			}
			if st := pool.Stats(); st.LiveBlocks != 0 {
				t.Errorf("%d blocks live", st.LiveBlocks)
			}
		})
	}
}
