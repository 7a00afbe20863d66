//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/falocal/falocal/kernels"
)

// Device runs kernels.Kernels on one GPU. It works in the device's primary
// context, the one ONNX Runtime's CUDA provider (runtime API) also uses, so
// memory and streams can later be shared with it. All driver calls run on
// one goroutine locked to its OS thread, because the current context is
// per-thread state. Methods are safe for concurrent use; calls serialize.
type Device struct {
	// CPU runs every operation without a device kernel: those the PTX
	// lacks, and Kernels methods added before this package launches them.
	kernels.CPU

	ord  cu.Device
	pctx cu.CUContext

	mu     sync.RWMutex // guards closed against sends on work
	closed bool
	work   chan func()
	done   chan struct{}

	mods []cu.Module
	fns  map[string]kernel // kernels the modules provide

	// poison, set by tests, fills every device output buffer with a NaN
	// pattern before launch so a kernel that skips elements cannot pass on
	// stale memory from an earlier run.
	poison bool
}

var _ kernels.Kernels = (*Device)(nil)

// New retains the primary context of the selected device on a dedicated OS
// thread and loads the PTX modules. Kernels missing from them (or all
// of them, if there is no PTX) fall back to the CPU reference.
func New(opts ...Option) (*Device, error) {
	cfg := config{}
	for _, o := range opts {
		o(&cfg)
	}
	if !cfg.ptxSet {
		cfg.ptx = kernels.PTX()
	}
	d := &Device{work: make(chan func()), done: make(chan struct{}), fns: map[string]kernel{}}
	ready := make(chan error, 1)
	go d.loop(cfg, ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return d, nil
}

// loop owns the OS thread. It never calls UnlockOSThread: when it returns,
// the thread (which had a context made current) is discarded by the runtime.
func (d *Device) loop(cfg config, ready chan<- error) {
	runtime.LockOSThread()
	defer close(d.done)
	if err := d.open(cfg); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for f := range d.work {
		f()
	}
	for _, m := range d.mods {
		_ = m.Unload()
	}
	_ = d.ord.ReleasePrimaryCtx()
}

func (d *Device) open(cfg config) error {
	n, err := cu.NumDevices()
	if err != nil {
		return fmt.Errorf("kernels/cuda: counting devices: %w", err)
	}
	if cfg.ordinal < 0 || cfg.ordinal >= n {
		return fmt.Errorf("kernels/cuda: device %d not present (%d devices)", cfg.ordinal, n)
	}
	if d.ord, err = cu.GetDevice(cfg.ordinal); err != nil {
		return fmt.Errorf("kernels/cuda: device %d: %w", cfg.ordinal, err)
	}
	// A retained primary context is not a *cu.Ctx, so no finalizer can
	// destroy it behind ORT's back; we release it in loop.
	if d.pctx, err = d.ord.RetainPrimaryCtx(); err != nil {
		return fmt.Errorf("kernels/cuda: retaining primary context: %w", err)
	}
	if err = cu.SetCurrentContext(d.pctx); err != nil {
		_ = d.ord.ReleasePrimaryCtx()
		return fmt.Errorf("kernels/cuda: making context current: %w", err)
	}
	mods := map[string]cu.Module{}
	for name, src := range cfg.ptx {
		m, err := cu.LoadData(src)
		if err != nil {
			// Fail loudly: a PTX the driver rejects (say, a newer ISA than
			// it knows) is a deployment error, not a reason to go slow.
			for _, m := range d.mods {
				_ = m.Unload()
			}
			_ = d.ord.ReleasePrimaryCtx()
			return fmt.Errorf("kernels/cuda: loading PTX module %s: %w", name, err)
		}
		mods[name] = m
		d.mods = append(d.mods, m)
	}
	entries := map[string]kernels.Entry{}
	for _, e := range kernels.Entries() {
		entries[e.Name] = e
	}
	for _, name := range kernelNames {
		// A missing entry is not an error: that operation stays on the CPU.
		e, ok := entries[name]
		m, ok2 := mods[e.Module]
		if !ok || !ok2 {
			continue
		}
		if fn, err := m.Function(name); err == nil {
			d.fns[name] = kernel{fn, e.Params}
		}
	}
	return nil
}

// kernel is a loaded entry point and its parameter kinds (kernels.Entry).
type kernel struct {
	fn     cu.Function
	params string
}

// do runs f on the device thread and waits for it.
func (d *Device) do(f func() error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	errc := make(chan error, 1)
	d.work <- func() { errc <- f() }
	return <-errc
}

// Close unloads the modules, releases the primary context and ends the
// thread.
// Buffers still allocated are freed with the context (if no one else holds
// it) or leak; free them first.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.work)
	d.mu.Unlock()
	<-d.done
	return nil
}

// Name returns the device's marketing name.
func (d *Device) Name() (name string, err error) {
	err = d.do(func() (e error) { name, e = d.ord.Name(); return })
	return
}

// MemInfo returns free and total device memory in bytes, as the residency
// budget needs; free reflects every process on the device.
func (d *Device) MemInfo() (free, total int64, err error) {
	err = d.do(func() (e error) { free, total, e = cu.MemInfo(); return })
	return
}

// HasKernel reports whether name runs on the device (otherwise its
// operation uses the CPU reference).
func (d *Device) HasKernel(name string) bool {
	_, ok := d.fns[name] // written only before New returns
	return ok
}

// Buffer is device memory owned by a Device.
type Buffer struct {
	d    *Device
	ptr  cu.DevicePtr
	size int64
}

// Alloc allocates size bytes of device memory.
func (d *Device) Alloc(size int64) (*Buffer, error) {
	if size <= 0 {
		return nil, fmt.Errorf("%w: kernels/cuda: Alloc(%d)", kernels.ErrInvalidArgument, size)
	}
	b := &Buffer{d: d, size: size}
	err := d.do(func() (e error) { b.ptr, e = cu.MemAlloc(size); return })
	if err != nil {
		return nil, fmt.Errorf("kernels/cuda: allocating %d bytes: %w", size, err)
	}
	return b, nil
}

// Size is the buffer's length in bytes.
func (b *Buffer) Size() int64 { return b.size }

// Ptr is the device address, for handing to other CUDA users in the same
// context.
func (b *Buffer) Ptr() uintptr { return uintptr(b.ptr) }

// Free releases the buffer; a second call does nothing.
func (b *Buffer) Free() error {
	if b.ptr == 0 {
		return nil
	}
	err := b.d.do(func() error { return cu.MemFree(b.ptr) })
	b.ptr = 0
	return err
}

// CopyIn copies src to the start of dst (host to device).
func CopyIn[T any](dst *Buffer, src []T) error {
	n := byteLen(src)
	if n == 0 {
		return nil
	}
	if n > dst.size {
		return fmt.Errorf("%w: kernels/cuda: CopyIn of %d bytes into %d", kernels.ErrInvalidArgument, n, dst.size)
	}
	p := unsafe.Pointer(unsafe.SliceData(src))
	return dst.d.do(func() error { return cu.MemcpyHtoD(dst.ptr, p, n) })
}

// CopyOut copies the start of src into dst (device to host).
func CopyOut[T any](dst []T, src *Buffer) error {
	n := byteLen(dst)
	if n == 0 {
		return nil
	}
	if n > src.size {
		return fmt.Errorf("%w: kernels/cuda: CopyOut of %d bytes from %d", kernels.ErrInvalidArgument, n, src.size)
	}
	p := unsafe.Pointer(unsafe.SliceData(dst))
	return src.d.do(func() error { return cu.MemcpyDtoH(p, src.ptr, n) })
}

func byteLen[T any](s []T) int64 {
	var z T
	return int64(len(s)) * int64(unsafe.Sizeof(z))
}

// arg is one kernel parameter, listed in the kernel's order: a C int (i32),
// a float (f32), or a pointer, either to device memory the caller holds
// (ptr, null) or to a host slice that launch stages through a scratch
// buffer (in, out, inout), so no operation repeats the upload, allocate,
// copy-back and free steps.
//
// cu's Launch copies exactly 8 bytes from each parameter pointer, so every
// argument gets its own 8-byte slot: a pointer to a bare int32 or float32
// would make it read 4 bytes past the value. The driver then takes the
// parameter's real size (4 for int/float) from the slot's start, which on
// little-endian hosts holds the low bytes. kind is 'p', 'i' or 'f', checked
// against kernels.Entry before launch so a parameter-list mismatch is an
// error, not garbage.
type arg struct {
	kind     byte
	val      uint64 // the slot: the value's bits, or ptr's device address
	host     []byte // in, out, inout: the slice's memory
	up, down bool   // in, inout: copied to the device; out, inout: copied back
}

// i32 is a C int. Callers check ranges with fitsInt32 (or area) first.
func i32(v int) arg { return arg{kind: 'i', val: uint64(uint32(int32(v)))} }

func f32(v float32) arg { return arg{kind: 'f', val: uint64(math.Float32bits(v))} }

// ptr is a device buffer the caller owns (tests and benchmarks keep data
// resident this way).
func ptr(b *Buffer) arg { return arg{kind: 'p', val: uint64(b.ptr)} }

// null is a 0 pointer (axpby's absent third term).
var null = arg{kind: 'p'}

// in is a read-only input: uploaded to its own buffer, so dst may alias it.
func in[T any](src []T) arg { return hostArg(src, true, false) }

// out is an output: a fresh buffer (poisoned in tests) copied back into dst.
func out[T any](dst []T) arg { return hostArg(dst, false, true) }

// inout is read and written in place: uploaded, then copied back.
func inout[T any](buf []T) arg { return hostArg(buf, true, true) }

func hostArg[T any](s []T, up, down bool) arg {
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), byteLen(s))
	return arg{kind: 'p', host: b, up: up, down: down}
}

// slots packs the arguments' values: the 8-byte slots Launch reads.
func slots(a []arg) []uint64 {
	s := make([]uint64, len(a))
	for i := range a {
		s[i] = a[i].val
	}
	return s
}

func fitsInt32(vs ...int) bool {
	for _, v := range vs {
		if v < math.MinInt32 || v > math.MaxInt32 {
			return false
		}
	}
	return true
}

const blockSize = 256

// convertPerThread is how many elements one thread of f32_to_f16 and
// f16_to_f32 converts (convert.cu).
const convertPerThread = 8

// convertThreads is the thread count of a conversion over n elements.
func convertThreads(n int) int { return (n + convertPerThread - 1) / convertPerThread }

// composeThreads is compose_alpha's thread count for n pixels: 4 a thread.
func composeThreads(n int) int { return (n + 3) / 4 }

// Grid-stride kernels (image.cu: image_to_tensor(_f16) over pixel pairs,
// resize_plane and resize_mask over pixels) are correct for any thread
// count and compute what is uniform over the launch once per thread.
// strideThreads gives, for n elements in rows of w, one thread per element
// up to strideFill, so small images still spread over the whole GPU (an
// H200 holds 132*2048 = 270336 resident threads), and beyond that up to
// stridePerThread elements a thread, which amortises the per-thread set-up
// while leaving many blocks (8192 for the 8192x8192 benchmark's pairs) so
// the last wave's imbalance stays small. That count is then rounded up to
// whole rows: with a stride that is a multiple of w, each thread stays in
// one column and maps it onto the source once.
const (
	strideFill      = 1 << 18
	stridePerThread = 16
)

func strideThreads(n, w int) int {
	k := min(max(n/strideFill, 1), stridePerThread)
	t := (n + k - 1) / k
	if t < n {
		t = (t + w - 1) / w * w // at most n+w-1: the extra threads return at once
	}
	return t
}

// launch is the one way a kernel runs: kernel name with n threads (1-D grid
// of ceil(n/blockSize) blocks of blockSize threads; ops.go notes each
// kernel's count) on the default stream, waiting for it so a kernel fault
// surfaces here rather than at a later unrelated call. Host slices among
// the arguments go through scratch buffers freed before it returns (see
// stage); after the kernel, out and inout are copied back in argument
// order.
func (d *Device) launch(name string, n int, a ...arg) (err error) {
	k, ok := d.fns[name]
	if !ok {
		return fmt.Errorf("kernels/cuda: kernel %s not loaded", name)
	}
	kinds := make([]byte, len(a))
	for i := range a {
		kinds[i] = a[i].kind
	}
	if string(kinds) != k.params {
		return fmt.Errorf("kernels/cuda: %s: arguments %q, PTX entry takes %q", name, kinds, k.params)
	}
	grid := (n + blockSize - 1) / blockSize
	if grid > math.MaxInt32 {
		return fmt.Errorf("kernels/cuda: %s: %d elements exceed one grid", name, n)
	}
	s := &scratch{d: d}
	defer func() {
		if ferr := s.release(); err == nil {
			err = ferr
		}
	}()
	vals := slots(a)
	bufs, err := s.stage(a, vals)
	if err != nil {
		return err
	}
	params := make([]unsafe.Pointer, len(vals))
	for i := range vals {
		params[i] = unsafe.Pointer(&vals[i])
	}
	err = d.do(func() error {
		if err := k.fn.Launch(grid, 1, 1, blockSize, 1, 1, 0, cu.NoStream, params); err != nil {
			return err
		}
		return cu.Synchronize()
	})
	runtime.KeepAlive(vals)
	if err != nil {
		return fmt.Errorf("kernels/cuda: %s: %w", name, err)
	}
	for i, x := range a {
		if x.down {
			if err := CopyOut(x.host, bufs[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// scratch holds the device buffers of one launch, all freed on release.
type scratch struct {
	d    *Device
	bufs []*Buffer
}

// stage gives each host argument its own buffer and puts its address in
// vals: in and inout uploaded in argument order, then out allocated. It
// returns the buffers by argument index.
func (s *scratch) stage(a []arg, vals []uint64) ([]*Buffer, error) {
	bufs := make([]*Buffer, len(a))
	for i, x := range a {
		if x.up {
			b, err := s.alloc(int64(len(x.host)))
			if err != nil {
				return nil, err
			}
			if err := CopyIn(b, x.host); err != nil {
				return nil, err
			}
			bufs[i], vals[i] = b, uint64(b.ptr)
		}
	}
	for i, x := range a {
		if x.down && !x.up {
			b, err := s.output(int64(len(x.host)))
			if err != nil {
				return nil, err
			}
			bufs[i], vals[i] = b, uint64(b.ptr)
		}
	}
	return bufs, nil
}

func (s *scratch) alloc(size int64) (*Buffer, error) {
	b, err := s.d.Alloc(max(size, 1))
	if err != nil {
		return nil, err
	}
	s.bufs = append(s.bufs, b)
	return b, nil
}

// output allocates an output buffer, poisoned in tests.
func (s *scratch) output(size int64) (*Buffer, error) {
	b, err := s.alloc(size)
	if err != nil || !s.d.poison {
		return b, err
	}
	// 0xFF bytes are a NaN in float32 and float16 and 255 in uint8.
	err = s.d.do(func() error { return cu.MemsetD8(b.ptr, 0xFF, b.size) })
	return b, err
}

func (s *scratch) release() error {
	var errs []error
	for _, b := range s.bufs {
		errs = append(errs, b.Free())
	}
	return errors.Join(errs...)
}
