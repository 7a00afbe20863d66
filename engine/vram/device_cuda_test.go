//go:build cuda

// The pool on a real GPU, through kernels/cuda's plain device allocations.
// Built only with -tags cuda, and it needs a GPU and driver to run (cu's
// init exits otherwise): bench/gpu/check.sh runs it on the device machine.
// The fake-allocator tests in pool_test.go run in the same binary.
package vram

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/falocal/falocal/kernels/cuda"
)

// kernels/cuda's allocator is what the server gives the pool.
var _ Allocator = (*cuda.Allocator)(nil)

func newDevicePool(t *testing.T, opts Options) (*Pool, *cuda.Allocator) {
	t.Helper()
	d, err := cuda.New()
	if err != nil {
		t.Fatalf("cuda.New: %v", err)
	}
	a := d.Allocator()
	p := New(a, opts)
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return p, a
}

func TestDeviceReuseAndTrim(t *testing.T) {
	p, a := newDevicePool(t, Options{MaxCached: 4 * gib})
	free0, total, err := a.MemInfo()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("device: %d MiB free of %d MiB", free0>>20, total>>20)

	q := mustAlloc(t, p, gib)
	mustFree(t, p, q)
	if got := mustAlloc(t, p, gib-1); got != q {
		t.Errorf("the cached 1 GiB block was not reused")
	}
	mustFree(t, p, q)

	// Cached memory is not free on the device, but Budget counts it.
	free1, _, _ := a.MemInfo()
	budget, err := p.Budget()
	if err != nil {
		t.Fatal(err)
	}
	if free1 > free0-gib+64*mib {
		t.Errorf("device free %d MiB after caching 1 GiB (was %d MiB)", free1>>20, free0>>20)
	}
	if budget < free0-64*mib {
		t.Errorf("budget %d MiB, want about the %d MiB free before", budget>>20, free0>>20)
	}
	released, err := p.Trim()
	if err != nil || released != gib {
		t.Fatalf("Trim() = %d, %v; want 1 GiB", released, err)
	}
	if free2, _, _ := a.MemInfo(); free2 < free0-64*mib {
		t.Errorf("device free %d MiB after Trim, want about %d MiB", free2>>20, free0>>20)
	}
}

// TestDeviceOutOfMemory asks for more than the card has (a plain
// allocation: it fails cleanly; managed memory would oversubscribe) with
// memory cached, so the pool trims, retries once, and reports the failure.
func TestDeviceOutOfMemory(t *testing.T) {
	p, a := newDevicePool(t, Options{})
	_, total, err := a.MemInfo()
	if err != nil {
		t.Fatal(err)
	}
	mustFree(t, p, mustAlloc(t, p, 64*mib))
	_, err = p.Alloc(total + gib)
	if !errors.Is(err, ErrOutOfMemory) {
		t.Fatalf("Alloc(total + 1 GiB): %v, want ErrOutOfMemory", err)
	}
	s := p.Stats()
	if s.Retries != 1 || s.Fails != 1 || s.Cached != 0 {
		t.Errorf("stats %+v: want one retry, one failure, nothing cached", s)
	}
	// The device is still usable.
	mustFree(t, p, mustAlloc(t, p, mib))
}

func TestDeviceConcurrent(t *testing.T) {
	p, _ := newDevicePool(t, Options{MaxCached: 256 * mib})
	sizes := []int64{4 * kib, 300 * kib, 3 * mib, 40 * mib}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				q, err := p.Alloc(sizes[(g+i)%len(sizes)])
				if err != nil {
					t.Error(err)
					return
				}
				if err := p.Free(q); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	s := p.Stats()
	t.Logf("allocs %d, reuse hits %d (%.0f%%), device allocs %d", s.Allocs, s.ReuseHits,
		100*float64(s.ReuseHits)/float64(max(s.Allocs, 1)), s.DeviceAllocs)
	if s.InUse != 0 || s.ReuseHits == 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestDeviceAllocLatency logs what the cache saves per allocation: a
// cuMemAlloc/cuMemFree pair against a reuse hit.
func TestDeviceAllocLatency(t *testing.T) {
	p, a := newDevicePool(t, Options{})
	const n, size = 200, 8 * mib
	start := time.Now()
	for range n {
		q, err := a.Alloc(size)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Free(q); err != nil {
			t.Fatal(err)
		}
	}
	raw := time.Since(start) / n
	mustFree(t, p, mustAlloc(t, p, size))
	start = time.Now()
	for range n {
		mustFree(t, p, mustAlloc(t, p, size))
	}
	pooled := time.Since(start) / n
	t.Logf("8 MiB alloc+free: device %v, pool %v", raw, pooled)
}
