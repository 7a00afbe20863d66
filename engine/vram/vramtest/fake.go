// Package vramtest is a deterministic fake device for tests of code that
// takes a vram.Allocator: a fixed capacity, addresses handed out in order,
// every call recorded, and failures on demand. It needs no GPU.
package vramtest

import (
	"errors"
	"fmt"
	"sync"
)

// ErrOutOfMemory is the fake's allocation failure.
var ErrOutOfMemory = errors.New("vramtest: out of memory")

// base is the first address handed out: nonzero, and 256-aligned like
// cudaMalloc's.
const base = 0x7f00_0000_0000

// Allocator is a fake device with Capacity bytes. The zero value is not
// usable; call New.
type Allocator struct {
	mu       sync.Mutex
	capacity int64
	used     int64
	next     uintptr
	blocks   map[uintptr]int64

	// FailNext makes the next that many Alloc calls fail regardless of
	// capacity (set under Lock, or before use).
	FailNext int
	// Misalign makes Alloc return pointers offset by this many bytes.
	Misalign uintptr
	// InfoErr, when set, is returned by MemInfo.
	InfoErr error

	Allocs, Frees, Failed int     // calls by outcome
	Sizes                 []int64 // sizes of successful Alloc calls, in order
}

// New makes a fake device of capacity bytes.
func New(capacity int64) *Allocator {
	return &Allocator{capacity: capacity, next: base, blocks: map[uintptr]int64{}}
}

// Alloc hands out n bytes at the next 256-aligned address.
func (a *Allocator) Alloc(n int64) (uintptr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.FailNext > 0 {
		a.FailNext--
		a.Failed++
		return 0, ErrOutOfMemory
	}
	if n <= 0 || a.used+n > a.capacity {
		a.Failed++
		return 0, fmt.Errorf("%w: %d bytes asked, %d of %d used", ErrOutOfMemory, n, a.used, a.capacity)
	}
	p := a.next + a.Misalign
	a.next += uintptr((n + 255) &^ 255)
	a.blocks[p] = n
	a.used += n
	a.Allocs++
	a.Sizes = append(a.Sizes, n)
	return p, nil
}

// Free releases a block; freeing an unknown pointer is an error, as the
// real driver's would be.
func (a *Allocator) Free(p uintptr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	n, ok := a.blocks[p]
	if !ok {
		return fmt.Errorf("vramtest: free of unknown pointer %#x", p)
	}
	delete(a.blocks, p)
	a.used -= n
	a.Frees++
	return nil
}

// MemInfo reports capacity minus what is allocated.
func (a *Allocator) MemInfo() (free, total int64, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.InfoErr != nil {
		return 0, 0, a.InfoErr
	}
	return a.capacity - a.used, a.capacity, nil
}

// Used reports the bytes allocated and not freed.
func (a *Allocator) Used() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.used
}

// Live reports the number of blocks allocated and not freed.
func (a *Allocator) Live() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.blocks)
}

// Lock and Unlock guard the exported fields while a test changes them
// concurrently with allocations.
func (a *Allocator) Lock()   { a.mu.Lock() }
func (a *Allocator) Unlock() { a.mu.Unlock() }
