//go:build cuda

package cuda

import (
	"fmt"
	"sync"
)

// Allocator hands out raw device addresses, as engine/vram's Allocator
// interface wants them (plain cuMemAlloc: never managed memory, so an
// oversubscribed card fails the allocation instead of paging).
type Allocator struct {
	d    *Device
	mu   sync.Mutex
	bufs map[uintptr]*Buffer
}

// Allocator returns an allocator over d's memory.
func (d *Device) Allocator() *Allocator {
	return &Allocator{d: d, bufs: map[uintptr]*Buffer{}}
}

// Alloc returns n bytes of device memory (cuMemAlloc aligns to 256 bytes
// at least).
func (a *Allocator) Alloc(n int64) (uintptr, error) {
	b, err := a.d.Alloc(n)
	if err != nil {
		return 0, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.bufs[b.Ptr()] = b
	return b.Ptr(), nil
}

// Free releases memory that Alloc returned.
func (a *Allocator) Free(p uintptr) error {
	a.mu.Lock()
	b, ok := a.bufs[p]
	delete(a.bufs, p)
	a.mu.Unlock()
	if !ok {
		return fmt.Errorf("kernels/cuda: free of %#x, not allocated here", p)
	}
	return b.Free()
}

// MemInfo reports the device's free and total memory.
func (a *Allocator) MemInfo() (free, total int64, err error) { return a.d.MemInfo() }
