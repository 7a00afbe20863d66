// Package vram is a caching pool of device memory in pure Go.
//
// Device allocation (cuMemAlloc/cudaMalloc) is slow and synchronises the
// device, and a server runs the same pipelines over and over with the same
// buffer sizes, so freed blocks are kept on per-size-class free lists and
// handed out again. Cached bytes are capped; above the cap, or when the
// residency scheduler asks (Trim), the largest cached blocks go back to the
// device first, since they free the most memory per call.
//
// The device itself is behind Allocator (kernels/cuda implements it with
// plain device allocations: managed memory would let an oversubscribed card
// page instead of failing, which is exactly what the scheduler must see).
// This package has no cgo and builds with CGO_ENABLED=0.
package vram

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Allocator is one device's raw memory. Implementations must be safe for
// concurrent use (the pool calls them outside its own lock).
type Allocator interface {
	// Alloc returns n bytes of device memory, aligned to Alignment.
	Alloc(n int64) (uintptr, error)
	// Free returns memory that Alloc gave.
	Free(p uintptr) error
	// MemInfo reports the device's free and total memory in bytes.
	MemInfo() (free, total int64, err error)
}

// MaxRequest bounds one request, so that class rounding cannot overflow.
const MaxRequest = 1 << 50

// DefaultMaxCached is the cap on cached-but-unused bytes when Options leaves
// it at 0: enough to keep a pipeline's working buffers between requests,
// small next to a model's weights.
const DefaultMaxCached = 1 << 30

var (
	// ErrInvalidSize is returned for a request ≤ 0 or above MaxRequest.
	ErrInvalidSize = errors.New("vram: invalid allocation size")
	// ErrOutOfMemory wraps the device's error once trimming and a retry
	// could not satisfy a request.
	ErrOutOfMemory = errors.New("vram: out of device memory")
	// ErrDoubleFree is returned for a pointer that is already free (cached).
	ErrDoubleFree = errors.New("vram: double free")
	// ErrUnknownPointer is returned for a pointer the pool did not hand out
	// (or one freed and already returned to the device).
	ErrUnknownPointer = errors.New("vram: free of a pointer not allocated by this pool")
	// ErrMisaligned is returned when the Allocator breaks its alignment
	// contract.
	ErrMisaligned = errors.New("vram: allocator returned a misaligned pointer")
	// ErrClosed is returned by Alloc after Close.
	ErrClosed = errors.New("vram: pool closed")
)

// Options configure a Pool.
type Options struct {
	// MaxCached caps the bytes kept on the free lists: 0 means
	// DefaultMaxCached, a negative value disables caching (every Free goes
	// straight back to the device).
	MaxCached int64
}

// Stats is a snapshot of a pool's counters. Gauges are bytes or blocks now;
// counters only grow (Prometheus counters map onto them directly).
type Stats struct {
	InUse        int64 // bytes handed out, by class size
	Requested    int64 // bytes asked for by the blocks handed out (InUse − Requested is rounding waste)
	PeakInUse    int64 // highest InUse seen
	Cached       int64 // bytes on the free lists
	MaxCached    int64 // the cap on Cached
	LiveBlocks   int   // blocks handed out
	CachedBlocks int   // blocks on the free lists

	Allocs       uint64 // successful Alloc calls
	ReuseHits    uint64 // of those, served from a free list
	Frees        uint64 // successful Free calls
	DeviceAllocs uint64 // Allocator.Alloc calls that succeeded
	DeviceFrees  uint64 // Allocator.Free calls that succeeded
	Retries      uint64 // allocations retried after an error and a trim
	Fails        uint64 // Alloc calls that returned an error (size errors excluded)
	BadFrees     uint64 // double frees and frees of unknown pointers
	FreeErrors   uint64 // Allocator.Free calls that failed
	TrimmedBytes uint64 // bytes returned to the device by trimming (cap, Trim, OOM)
}

type live struct {
	class, requested int64
}

// Pool is a caching allocator over one device. It is safe for concurrent use.
type Pool struct {
	dev       Allocator
	maxCached int64

	mu     sync.Mutex
	closed bool
	live   map[uintptr]live
	free   map[int64][]uintptr // class → blocks, most recently freed last
	cached map[uintptr]int64   // the same blocks by pointer, to catch double frees
	st     Stats
}

// New makes a pool over dev.
func New(dev Allocator, opts Options) *Pool {
	maxCached := opts.MaxCached
	switch {
	case maxCached == 0:
		maxCached = DefaultMaxCached
	case maxCached < 0:
		maxCached = 0
	}
	return &Pool{dev: dev, maxCached: maxCached, live: map[uintptr]live{},
		free: map[int64][]uintptr{}, cached: map[uintptr]int64{}}
}

// Alloc returns a block of at least n bytes, aligned to Alignment: a cached
// block of n's class when there is one, else a new one from the device. When
// the device fails, every cached block is released and the allocation is
// tried once more (cached blocks of other classes may be what fills the
// device); a second failure returns an error wrapping both ErrOutOfMemory
// and the device's error.
func (p *Pool) Alloc(n int64) (uintptr, error) {
	if n <= 0 || n > MaxRequest {
		return 0, fmt.Errorf("%w: %d bytes", ErrInvalidSize, n)
	}
	class := ClassOf(n)

	p.mu.Lock()
	if p.closed {
		p.st.Fails++
		p.mu.Unlock()
		return 0, ErrClosed
	}
	if list := p.free[class]; len(list) > 0 {
		ptr := list[len(list)-1]
		p.free[class] = list[:len(list)-1]
		delete(p.cached, ptr)
		p.st.Cached -= class
		p.st.CachedBlocks--
		p.st.ReuseHits++
		p.handOutLocked(ptr, class, n)
		p.mu.Unlock()
		return ptr, nil
	}
	p.mu.Unlock()

	// The device call runs unlocked: cudaMalloc can take milliseconds, and
	// other goroutines' reuse hits and frees need not wait for it.
	ptr, err := p.deviceAlloc(class)
	if err != nil {
		released, _ := p.trimTo(0)
		if released > 0 {
			p.mu.Lock()
			p.st.Retries++
			p.mu.Unlock()
			ptr, err = p.deviceAlloc(class)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.st.Fails++
		if errors.Is(err, ErrMisaligned) {
			return 0, err
		}
		return 0, fmt.Errorf("%w: %d bytes (class %d): %w", ErrOutOfMemory, n, class, err)
	}
	if p.closed {
		// Close ran while the device call was in flight: give the block back
		// rather than leak it past the pool's life.
		p.st.Fails++
		p.mu.Unlock()
		ferr := p.deviceFree(ptr, class)
		p.mu.Lock()
		return 0, errors.Join(ErrClosed, ferr)
	}
	p.handOutLocked(ptr, class, n)
	return ptr, nil
}

func (p *Pool) handOutLocked(ptr uintptr, class, n int64) {
	p.live[ptr] = live{class: class, requested: n}
	p.st.Allocs++
	p.st.LiveBlocks++
	p.st.InUse += class
	p.st.Requested += n
	p.st.PeakInUse = max(p.st.PeakInUse, p.st.InUse)
}

func (p *Pool) deviceAlloc(class int64) (uintptr, error) {
	ptr, err := p.dev.Alloc(class)
	if err != nil {
		return 0, err
	}
	if ptr == 0 || ptr%Alignment != 0 {
		// Give it back (uncounted, as its allocation was): a misaligned
		// block would break vectorised kernels.
		return 0, errors.Join(fmt.Errorf("%w: %#x", ErrMisaligned, ptr), p.dev.Free(ptr))
	}
	p.mu.Lock()
	p.st.DeviceAllocs++
	p.mu.Unlock()
	return ptr, nil
}

func (p *Pool) deviceFree(ptr uintptr, class int64) error {
	err := p.dev.Free(ptr)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.st.FreeErrors++
		return fmt.Errorf("vram: device free of %#x (%d bytes): %w", ptr, class, err)
	}
	p.st.DeviceFrees++
	return nil
}

// Free returns a block to the pool. It is cached for reuse, and the largest
// cached blocks go back to the device while the cache is over its cap.
// Freeing a block twice returns ErrDoubleFree, and a pointer the pool never
// handed out ErrUnknownPointer; neither changes the pool.
func (p *Pool) Free(ptr uintptr) error {
	p.mu.Lock()
	b, ok := p.live[ptr]
	if !ok {
		p.st.BadFrees++
		_, dup := p.cached[ptr]
		p.mu.Unlock()
		if dup {
			return fmt.Errorf("%w: %#x", ErrDoubleFree, ptr)
		}
		return fmt.Errorf("%w: %#x", ErrUnknownPointer, ptr)
	}
	delete(p.live, ptr)
	p.st.Frees++
	p.st.LiveBlocks--
	p.st.InUse -= b.class
	p.st.Requested -= b.requested
	if p.closed || b.class > p.maxCached {
		// Too big to ever cache (or nothing is cached any more): skip the
		// free list rather than evict everything else for it.
		p.mu.Unlock()
		return p.deviceFree(ptr, b.class)
	}
	p.free[b.class] = append(p.free[b.class], ptr)
	p.cached[ptr] = b.class
	p.st.Cached += b.class
	p.st.CachedBlocks++
	over := p.st.Cached > p.maxCached
	p.mu.Unlock()
	if over {
		_, err := p.trimTo(p.maxCached)
		return err
	}
	return nil
}

// Trim returns every cached block to the device, largest first, and reports
// the bytes released. The residency scheduler calls it before loading a
// model when the device is short.
func (p *Pool) Trim() (int64, error) { return p.trimTo(0) }

// TrimTo returns cached blocks to the device, largest first, until at most
// target bytes stay cached.
func (p *Pool) TrimTo(target int64) (int64, error) { return p.trimTo(max(target, 0)) }

type block struct {
	ptr   uintptr
	class int64
}

func (p *Pool) trimTo(target int64) (int64, error) {
	p.mu.Lock()
	var out []block
	if p.st.Cached > target {
		classes := make([]int64, 0, len(p.free))
		for c, list := range p.free {
			if len(list) > 0 {
				classes = append(classes, c)
			}
		}
		slices.Sort(classes)
		for i := len(classes) - 1; i >= 0 && p.st.Cached > target; i-- {
			c := classes[i]
			list := p.free[c]
			// Oldest first within a class: the newest is likeliest to be
			// asked for again.
			for len(list) > 0 && p.st.Cached > target {
				ptr := list[0]
				list = list[1:]
				delete(p.cached, ptr)
				p.st.Cached -= c
				p.st.CachedBlocks--
				out = append(out, block{ptr, c})
			}
			if len(list) == 0 {
				delete(p.free, c)
			} else {
				p.free[c] = list
			}
		}
	}
	p.mu.Unlock()

	// Released from the books before the device calls, so concurrent
	// allocations never pick a block that is on its way out.
	var released int64
	var errs []error
	for _, b := range out {
		if err := p.deviceFree(b.ptr, b.class); err != nil {
			errs = append(errs, err)
			continue
		}
		released += b.class
	}
	if released > 0 {
		p.mu.Lock()
		p.st.TrimmedBytes += uint64(released)
		p.mu.Unlock()
	}
	return released, errors.Join(errs...)
}

// Budget is the device memory a new model may count on: what the device
// reports free plus what this pool holds cached (Trim turns the latter into
// the former).
func (p *Pool) Budget() (int64, error) {
	free, _, err := p.dev.MemInfo()
	if err != nil {
		return 0, fmt.Errorf("vram: device memory info: %w", err)
	}
	return free + p.Stats().Cached, nil
}

// MemInfo reports the device's memory with the pool's cached bytes counted
// as free (as Budget does), so a Pool can stand wherever an Allocator is
// expected.
func (p *Pool) MemInfo() (free, total int64, err error) {
	free, total, err = p.dev.MemInfo()
	if err != nil {
		return 0, 0, err
	}
	return free + p.Stats().Cached, total, nil
}

// Stats returns a snapshot of the counters.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.st
	s.MaxCached = p.maxCached
	return s
}

// Close returns every cached block to the device and stops caching: blocks
// still handed out go straight back to the device when freed. Alloc fails
// with ErrClosed afterwards. It reports blocks still in use, since the
// caller is expected to have freed them.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_, err := p.trimTo(0)
	st := p.Stats()
	if st.LiveBlocks > 0 {
		err = errors.Join(err, fmt.Errorf("vram: pool closed with %d blocks (%d bytes) in use", st.LiveBlocks, st.InUse))
	}
	return err
}

var _ Allocator = (*Pool)(nil)

// Cached reports the bytes on the free lists (engine.DeviceMemory).
func (p *Pool) Cached() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st.Cached
}
