//go:build cgo

package ort

// #include "onnxruntime_c_api.h"
import "C"

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"unsafe"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/falocal/falocal/engine"
)

// ErrNoCUDA reports CUDA memory asked of an ONNX Runtime library without
// the CUDA execution provider (the CPU build).
var ErrNoCUDA = errors.New("ort: this ONNX Runtime library has no CUDA execution provider (install the GPU build, see README)")

// Value is an ORT tensor value for IO binding: either a view of
// caller-owned memory (WrapTensor) or an output ORT allocated
// (BoundSession.BoundOutputs). Close releases the ORT value, never the
// caller's memory. A Value is not safe for concurrent Close.
type Value struct {
	v     *C.OrtValue
	dtype engine.DType
	shape []int64
	data  uintptr
	place Place
	mu    sync.Mutex
}

// DType is the element type.
func (v *Value) DType() engine.DType { return v.dtype }

// Shape is the tensor's shape (a copy).
func (v *Value) Shape() []int64 { return append([]int64(nil), v.shape...) }

// Data is the address of the first element, in Place's memory (a device
// pointer for CUDA). For an ORT-allocated output it is valid until Close.
func (v *Value) Data() uintptr { return v.data }

// Place is where the data lives.
func (v *Value) Place() Place { return v.place }

// Bytes is the data size: elements × element size.
func (v *Value) Bytes() int64 { return engine.Elements(v.shape) * int64(v.dtype.Size()) }

// Tensor copies a host-resident value into a new engine.Tensor (F32 for
// float32, Raw otherwise). Device memory cannot be read here: copy it to the
// host with the CUDA kernels first, or bind the output to CPUPlace.
func (v *Value) Tensor() (*engine.Tensor, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.v == nil {
		return nil, engine.ErrClosed
	}
	if !v.place.OnHost() {
		return nil, fmt.Errorf("ort: value in %s memory is not readable from the host", v.place)
	}
	n := v.Bytes()
	t := &engine.Tensor{DType: v.dtype, Shape: v.Shape()}
	if n == 0 {
		if v.dtype == engine.Float32 {
			t.F32 = []float32{}
		} else {
			t.Raw = []byte{}
		}
		return t, nil
	}
	if v.dtype == engine.Float32 {
		t.F32 = make([]float32, n/4)
		copyFromC(unsafe.Slice((*byte)(unsafe.Pointer(&t.F32[0])), n), v.data)
	} else {
		t.Raw = make([]byte, n)
		copyFromC(t.Raw, v.data)
	}
	return t, nil
}

// Close releases the ORT value. Closing twice is safe.
func (v *Value) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.v != nil {
		releaseValueC(v.v)
		v.v = nil
	}
	return nil
}

// withValue calls f with the OrtValue, holding v open meanwhile.
func (v *Value) withValue(f func(*C.OrtValue) error) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.v == nil {
		return engine.ErrClosed
	}
	return f(v.v)
}

// checkPlace refuses GPU places on a library without the CUDA provider, so
// that a CPU build reports it plainly instead of failing deep in ORT.
func (r *Runtime) checkPlace(p Place) error {
	switch p.Kind {
	case PlaceCPU:
		return nil
	case PlaceCUDA, PlaceCUDAPinned:
		if p.Device < 0 {
			return fmt.Errorf("ort: negative CUDA device %d", p.Device)
		}
		if why, ok := r.info.Unavailable[engine.CUDA]; ok {
			return fmt.Errorf("%w: %s memory with %s: %s", ErrNoCUDA, p, r.info.Library, why)
		}
		return nil
	}
	return fmt.Errorf("ort: unknown memory place %v", p)
}

// WrapTensor makes a tensor value over size bytes of caller-owned memory at
// ptr in place: a device pointer (from engine/vram) for CUDAPlace, C or
// pinned host memory (HostMemory) for the host places; never Go-heap memory,
// which the garbage collector may move. The memory must stay valid, and
// unchanged while a run reads it, until the value and every binding of it
// are gone (Close, ClearInputs/ClearOutputs or the session's Close). The
// value never frees it.
func (r *Runtime) WrapTensor(place Place, ptr uintptr, size int64, dt engine.DType, shape []int64) (*Value, error) {
	if err := r.checkPlace(place); err != nil {
		return nil, err
	}
	return r.wrap(place, ptr, size, dt, shape)
}

func (r *Runtime) wrap(place Place, ptr uintptr, size int64, dt engine.DType, shape []int64) (*Value, error) {
	if err := r.loadBridge(); err != nil {
		return nil, err
	}
	if dt.Size() == 0 {
		return nil, fmt.Errorf("ort: unsupported element type %v", dt)
	}
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return nil, fmt.Errorf("ort: negative dimension in shape %v", shape)
		}
		if d > 0 && n > math.MaxInt64/d {
			return nil, fmt.Errorf("ort: shape %v overflows", shape)
		}
		n *= d
	}
	need := n * int64(dt.Size())
	if size < need {
		return nil, fmt.Errorf("ort: shape %v of %s needs %d bytes, have %d", shape, dt, need, size)
	}
	if ptr == 0 && need > 0 {
		return nil, errors.New("ort: nil data pointer")
	}
	m, err := memoryInfo(place)
	if err != nil {
		return nil, err
	}
	// ORT checks the buffer length against shape and type itself: give it
	// exactly the bytes the tensor covers.
	v, err := wrapC(m, ptr, need, dt, shape)
	if err != nil {
		return nil, fmt.Errorf("ort: wrap %s tensor %v: %w", dt, shape, err)
	}
	return &Value{v: v, dtype: dt, shape: append([]int64(nil), shape...), data: ptr, place: place}, nil
}

// HostMemory is zeroed C heap memory for binding host tensors (WrapTensor
// with CPUPlace) without copying. Free releases it; a HostMemory is not safe
// for concurrent Free.
type HostMemory struct {
	p unsafe.Pointer
	n int64
}

// NewHostMemory allocates n zeroed bytes outside Go's heap.
func NewHostMemory(n int64) (*HostMemory, error) {
	if n <= 0 {
		return nil, fmt.Errorf("ort: host memory of %d bytes", n)
	}
	p := hostAlloc(n)
	if p == nil {
		return nil, fmt.Errorf("ort: cannot allocate %d bytes", n)
	}
	return &HostMemory{p: p, n: n}, nil
}

// Ptr is the memory's address (0 after Free).
func (h *HostMemory) Ptr() uintptr { return uintptr(h.p) }

// Len is its size in bytes.
func (h *HostMemory) Len() int64 { return h.n }

// Bytes views the memory; the slice is invalid after Free.
func (h *HostMemory) Bytes() []byte {
	if h.p == nil {
		return nil
	}
	return unsafe.Slice((*byte)(h.p), h.n)
}

// Free releases the memory; freeing twice is safe.
func (h *HostMemory) Free() {
	if h.p != nil {
		hostFree(h.p)
		h.p = nil
	}
}

// BoundSession is a model session run through ORT IO binding: inputs and
// outputs are bound to memory the caller owns (host or device), and Run
// reuses the binding until it changes (see BindInput for when a changed
// input must be bound again). Its methods are serialised: one
// run at a time per BoundSession (open several for parallel runs).
type BoundSession struct {
	rt        *Runtime
	path      string
	inputs    []engine.TensorInfo // the ones spec named, or all
	outputs   []engine.TensorInfo
	allIn     []engine.TensorInfo // every model input, for checking binds
	allOut    []engine.TensorInfo
	providers []engine.Provider

	mu     sync.Mutex
	sess   *C.OrtSession
	bind   *C.OrtIoBinding
	toDev  map[string]*C.OrtMemoryInfo // outputs bound with BindOutputTo
	closed bool
}

// OpenBound loads a model for IO-bound runs. spec means what it means to
// Open: providers in priority order with CPU the last resort (a provider the
// library lacks is skipped with one logged reason; Providers reports what
// the session got), TensorRT's engine cache and fp16, DeviceID,
// IntraOpThreads; every graph optimisation on. spec.Inputs and
// spec.Outputs, when given, must exist and are what Inputs and Outputs
// report; binding accepts any of the model's inputs and outputs.
func (r *Runtime) OpenBound(ctx context.Context, spec engine.SessionSpec) (*BoundSession, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := r.loadBridge(); err != nil {
		return nil, err
	}
	inInfo, outInfo, err := ortgo.GetInputOutputInfo(spec.Path)
	if err != nil {
		return nil, fmt.Errorf("ort: read %s: %w", spec.Path, err)
	}
	s := &BoundSession{rt: r, path: spec.Path, allIn: infos(inInfo), allOut: infos(outInfo), toDev: map[string]*C.OrtMemoryInfo{}}
	s.inputs, s.outputs = s.allIn, s.allOut
	if len(spec.Inputs) > 0 {
		if s.inputs, err = pick(inInfo, spec.Inputs); err != nil {
			return nil, fmt.Errorf("ort: %s inputs: %w", spec.Path, err)
		}
	}
	if len(spec.Outputs) > 0 {
		if s.outputs, err = pick(outInfo, spec.Outputs); err != nil {
			return nil, fmt.Errorf("ort: %s outputs: %w", spec.Path, err)
		}
	}

	so, err := newSessionOptionsC(spec.IntraOpThreads)
	if err != nil {
		return nil, fmt.Errorf("ort: session options: %w", err)
	}
	defer releaseSessionOptionsC(so)
	for _, p := range spec.Providers {
		if p == engine.CPU {
			continue
		}
		if err := appendProviderC(so, p, spec); err != nil {
			r.warnOnce(p, err)
			continue
		}
		s.providers = append(s.providers, p)
	}
	s.providers = append(s.providers, engine.CPU)

	if s.sess, err = createSessionC(spec.Path, so); err != nil {
		return nil, fmt.Errorf("ort: load %s: %w", spec.Path, err)
	}
	if s.bind, err = createBindingC(s.sess); err != nil {
		releaseSessionC(s.sess)
		return nil, fmt.Errorf("ort: io binding for %s: %w", spec.Path, err)
	}
	return s, nil
}

// infos converts every model input or output; unsupported element types get
// DType 0, which no bind accepts.
func infos(in []ortgo.InputOutputInfo) []engine.TensorInfo {
	out := make([]engine.TensorInfo, len(in))
	for i, x := range in {
		dt, _ := fromORT(x.DataType)
		out[i] = engine.TensorInfo{Name: x.Name, DType: dt, Shape: append([]int64(nil), x.Dimensions...)}
	}
	return out
}

// Inputs reports the model inputs (those spec.Inputs named, or all).
func (s *BoundSession) Inputs() []engine.TensorInfo { return s.inputs }

// Outputs reports the model outputs (those spec.Outputs named, or all).
func (s *BoundSession) Outputs() []engine.TensorInfo { return s.outputs }

// Providers reports the providers the session got, CPU last.
func (s *BoundSession) Providers() []engine.Provider { return s.providers }

func (s *BoundSession) lock() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return engine.ErrClosed
	}
	return nil
}

// check matches a value to a model input or output: name, element type,
// rank and every fixed dimension.
func check(kind string, model []engine.TensorInfo, name string, v *Value) error {
	for _, m := range model {
		if m.Name != name {
			continue
		}
		if m.DType == 0 {
			return fmt.Errorf("ort: %s %s has an element type the engine does not support", kind, name)
		}
		if v == nil {
			return nil
		}
		if v.dtype != m.DType {
			return fmt.Errorf("ort: %s %s is %s, value is %s", kind, name, m.DType, v.dtype)
		}
		ok := len(v.shape) == len(m.Shape)
		for i := 0; ok && i < len(m.Shape); i++ {
			ok = m.Shape[i] < 0 || m.Shape[i] == v.shape[i]
		}
		if !ok {
			return fmt.Errorf("ort: %s %s has shape %v, value has %v", kind, name, m.Shape, v.shape)
		}
		return nil
	}
	have := make([]string, len(model))
	for i, m := range model {
		have[i] = m.Name
	}
	return fmt.Errorf("ort: no %s named %q (have %v)", kind, name, have)
}

// BindInput binds v to the input name, replacing an earlier binding of it.
// The binding holds its own reference: v may be closed afterwards, but its
// memory must stay valid until the binding is cleared or replaced.
// Where the input is consumed in another place than v's memory (host memory
// for a graph input on CUDA, device memory for one the graph reads on the
// CPU), ORT copies it now, at bind time: after changing such memory, bind it
// again. Memory already where the graph reads it is read by every run.
func (s *BoundSession) BindInput(name string, v *Value) error { return s.bindValue(true, name, v) }

// BindOutput binds a preallocated v to the output name: the run writes into
// v's memory, whose shape must be the output's actual shape.
func (s *BoundSession) BindOutput(name string, v *Value) error { return s.bindValue(false, name, v) }

func (s *BoundSession) bindValue(input bool, name string, v *Value) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	kind, model := "output", s.allOut
	if input {
		kind, model = "input", s.allIn
	}
	if err := check(kind, model, name, v); err != nil {
		return err
	}
	if v == nil {
		return fmt.Errorf("ort: nil value for %s", name)
	}
	err := v.withValue(func(ov *C.OrtValue) error {
		if err := bindC(s.bind, input, name, ov); err != nil {
			return fmt.Errorf("ort: bind %s %s: %w", kind, name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !input {
		delete(s.toDev, name)
	}
	return nil
}

// BindOutputTo lets each run allocate the output name in place, for outputs
// whose shape is known only after the run; BoundOutputs returns it. (ORT
// keeps the first run's allocation bound as if preallocated, which fails
// when the shape changes: Run binds these outputs afresh each time.)
func (s *BoundSession) BindOutputTo(name string, place Place) error {
	if err := s.rt.checkPlace(place); err != nil {
		return err
	}
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if err := check("output", s.allOut, name, nil); err != nil {
		return err
	}
	m, err := memoryInfo(place)
	if err != nil {
		return err
	}
	if err := bindToDeviceC(s.bind, name, m); err != nil {
		return fmt.Errorf("ort: bind output %s to %s: %w", name, place, err)
	}
	s.toDev[name] = m
	return nil
}

// ClearInputs drops every input binding.
func (s *BoundSession) ClearInputs() error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	clearC(s.bind, true)
	return nil
}

// ClearOutputs drops every output binding.
func (s *BoundSession) ClearOutputs() error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	clearC(s.bind, false)
	clear(s.toDev)
	return nil
}

// Run runs the model on the bound inputs into the bound outputs. Inputs are
// synchronised before the run and outputs after it, so on CUDA the outputs
// are complete when Run returns; Run does not wait for work the caller
// queued on its own CUDA streams, which must be synchronised before Run.
// Outputs bound with BindOutputTo a CUDA place come from ORT's CUDA arena,
// not from the caller's pool. A cancelled ctx
// terminates the run (RunOptions terminate, as Session.Run) and Run returns
// an error wrapping ctx.Err(); the binding stays usable.
func (s *BoundSession) Run(ctx context.Context) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	for name, m := range s.toDev {
		if err := bindToDeviceC(s.bind, name, m); err != nil {
			return fmt.Errorf("ort: bind output %s: %w", name, err)
		}
	}
	if err := syncC(s.bind, true); err != nil {
		return fmt.Errorf("ort: synchronize inputs: %w", err)
	}
	opts, err := newRunOptionsC()
	if err != nil {
		return fmt.Errorf("ort: run options: %w", err)
	}
	defer releaseRunOptionsC(opts)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
			_ = terminateC(opts)
		case <-done:
		}
	}()
	err = runC(s.sess, opts, s.bind)
	close(done)
	<-stopped
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("ort: run interrupted: %w", ctx.Err())
		}
		return fmt.Errorf("ort: run %s: %w", s.path, err)
	}
	if err := syncC(s.bind, false); err != nil {
		return fmt.Errorf("ort: synchronize outputs: %w", err)
	}
	return nil
}

// Output is one bound output after a run.
type Output struct {
	Name  string
	Value *Value
}

// BoundOutputs returns the bound outputs in binding order, with the shapes
// the last run produced. Each Value is a new reference the caller must
// Close; an output bound with BindOutputTo keeps ORT's memory alive until
// then, even across later runs.
func (s *BoundSession) BoundOutputs() ([]Output, error) {
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	names, vals, err := boundOutputsC(s.bind)
	if err != nil {
		return nil, fmt.Errorf("ort: bound outputs: %w", err)
	}
	out := make([]Output, 0, len(vals))
	for i, v := range vals {
		d, err := describeC(v)
		if err == nil && d.dtype == 0 {
			err = fmt.Errorf("unsupported element type %d", d.onnx)
		}
		if err != nil {
			for _, w := range vals[i:] {
				releaseValueC(w)
			}
			for _, o := range out {
				o.Value.Close()
			}
			return nil, fmt.Errorf("ort: output %s: %w", names[i], err)
		}
		out = append(out, Output{Name: names[i], Value: &Value{v: v, dtype: d.dtype, shape: d.shape, data: d.data, place: d.place}})
	}
	return out, nil
}

// Close releases the binding and the session (not the caller's memory).
// Closing twice is safe; a running Run finishes first.
func (s *BoundSession) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	releaseBindingC(s.bind)
	releaseSessionC(s.sess)
	s.bind, s.sess = nil, nil
	return nil
}
