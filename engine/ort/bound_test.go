//go:build cgo

package ort

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/falocal/falocal/engine"
)

func boundRT(t *testing.T) *Runtime {
	t.Helper()
	return runtimeT(t).(*Runtime)
}

func openBound(t *testing.T, rt *Runtime, spec engine.SessionSpec) *BoundSession {
	t.Helper()
	s, err := rt.OpenBound(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func tensorBytes(x *engine.Tensor) []byte {
	if x.DType != engine.Float32 {
		return x.Raw
	}
	b := make([]byte, 4*len(x.F32))
	for i, f := range x.F32 {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

// hostValue wraps C memory of dt and shape (holding data, if given) as a
// CPU tensor; the memory is freed after the test.
func hostValue(t *testing.T, rt *Runtime, dt engine.DType, shape []int64, data []byte) (*Value, *HostMemory) {
	t.Helper()
	n := engine.Elements(shape) * int64(dt.Size())
	h, err := NewHostMemory(max(n, 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Free)
	copy(h.Bytes(), data)
	v, err := rt.WrapTensor(CPUPlace(), h.Ptr(), n, dt, shape)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v, h
}

func hostTensor(t *testing.T, rt *Runtime, x *engine.Tensor) *Value {
	t.Helper()
	v, _ := hostValue(t, rt, x.DType, x.Shape, tensorBytes(x))
	return v
}

func f32(shape []int64, f func(i int) float32) *engine.Tensor {
	d := make([]float32, engine.Elements(shape))
	for i := range d {
		d[i] = f(i)
	}
	x, _ := engine.NewFloat32(d, shape...)
	return x
}

func i64(v ...int64) *engine.Tensor {
	return &engine.Tensor{DType: engine.Int64, Shape: []int64{int64(len(v))}, Raw: int64Bytes(v)}
}

func sameTensor(t *testing.T, name string, got, want *engine.Tensor) {
	t.Helper()
	if got.DType != want.DType || !equalShape(got.Shape, want.Shape) {
		t.Fatalf("%s: got %s %v, want %s %v", name, got.DType, got.Shape, want.DType, want.Shape)
	}
	if !bytes.Equal(tensorBytes(got), tensorBytes(want)) {
		t.Fatalf("%s: data differs from the plain run", name)
	}
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// gtOf is a > b elementwise, as ONNX bools.
func gtOf(a, b *engine.Tensor) *engine.Tensor {
	r := make([]byte, len(a.F32))
	for i := range r {
		if a.F32[i] > b.F32[i] {
			r[i] = 1
		}
	}
	return &engine.Tensor{DType: engine.Bool, Shape: a.Shape, Raw: r}
}

func TestBridgeAPIVersion(t *testing.T) {
	rt := boundRT(t)
	if err := rt.loadBridge(); err != nil {
		t.Fatal(err)
	}
	if bridgeVersion != rt.Info().Version {
		t.Errorf("bridge reached ORT %q, onnxruntime_go %q: not the same library", bridgeVersion, rt.Info().Version)
	}
	h, err := os.ReadFile("include/onnxruntime_c_api.h")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^#define ORT_API_VERSION (\d+)$`).FindSubmatch(h)
	if m == nil {
		t.Fatal("no ORT_API_VERSION in the vendored header")
	}
	if v, _ := strconv.Atoi(string(m[1])); v != APIVersion {
		t.Errorf("vendored header declares API %d, bridge requests %d", v, APIVersion)
	}
}

// Bound runs give exactly what the plain Session.Run gives, with outputs
// preallocated by the caller or allocated by ORT in host memory.
func TestBoundMatchesRun(t *testing.T) {
	rt := boundRT(t)
	a := f32([]int64{3, 4}, func(i int) float32 { return float32(i)*0.25 - 1 })
	b := f32([]int64{3, 4}, func(i int) float32 { return 1.5 - float32(i%5)*0.5 })
	n := i64(-3, 7, 1<<20)
	x := f32([]int64{2, 3}, func(i int) float32 { return []float32{1, -2, 0.5, 65504, 3.140625, -0.0001}[i] })
	cases := []struct {
		name  string
		spec  engine.SessionSpec
		in    []*engine.Tensor
		extra map[string]*engine.Tensor // outputs the plain run cannot return
		big   bool
	}{
		{name: "ops", spec: engine.SessionSpec{Path: "testdata/ops_dyn.onnx", Inputs: []string{"a", "b", "n"}, Outputs: []string{"sum", "sq"}},
			in: []*engine.Tensor{a, b, n}, extra: map[string]*engine.Tensor{"gt": gtOf(a, b)}},
		{name: "fp16", spec: engine.SessionSpec{Path: "testdata/cast_fp16.onnx", Inputs: []string{"x"}, Outputs: []string{"y"}},
			in: []*engine.Tensor{x}},
		{name: "isnet", spec: engine.SessionSpec{Path: "", Inputs: []string{"input"}, Outputs: []string{"output"}},
			in: []*engine.Tensor{isnetInput(-0.2)}, big: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.big {
				if testing.Short() {
					t.Skip("ISNet at 1024² takes seconds")
				}
				c.spec.Path = isnetPath(t)
			}
			plain, err := rt.Open(context.Background(), c.spec)
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close()
			want, err := plain.Run(context.Background(), c.in, nil)
			if err != nil {
				t.Fatal(err)
			}
			wantBy := map[string]*engine.Tensor{}
			for i, o := range c.spec.Outputs {
				wantBy[o] = want[i]
			}
			outNames := append([]string(nil), c.spec.Outputs...)
			for k, v := range c.extra {
				wantBy[k] = v
				outNames = append(outNames, k)
			}
			for _, mode := range []string{"preallocated", "to-place"} {
				t.Run(mode, func(t *testing.T) {
					s := openBound(t, rt, engine.SessionSpec{Path: c.spec.Path, Outputs: outNames})
					for i, name := range c.spec.Inputs {
						if err := s.BindInput(name, hostTensor(t, rt, c.in[i])); err != nil {
							t.Fatal(err)
						}
					}
					var mems []*HostMemory
					var names []string
					for _, o := range s.Outputs() {
						w := wantBy[o.Name]
						names = append(names, o.Name)
						if mode == "to-place" {
							if err := s.BindOutputTo(o.Name, CPUPlace()); err != nil {
								t.Fatal(err)
							}
							continue
						}
						v, h := hostValue(t, rt, w.DType, w.Shape, nil)
						mems = append(mems, h)
						if err := s.BindOutput(o.Name, v); err != nil {
							t.Fatal(err)
						}
					}
					if err := s.Run(context.Background()); err != nil {
						t.Fatal(err)
					}
					outs, err := s.BoundOutputs()
					if err != nil {
						t.Fatal(err)
					}
					if len(outs) != len(names) {
						t.Fatalf("%d bound outputs, want %d", len(outs), len(names))
					}
					for i, o := range outs {
						if o.Name != names[i] {
							t.Errorf("output %d is %s, want %s", i, o.Name, names[i])
						}
						if o.Value.Place() != CPUPlace() {
							t.Errorf("%s in %s", o.Name, o.Value.Place())
						}
						if mode == "preallocated" && o.Value.Data() != mems[i].Ptr() {
							t.Errorf("%s: ORT wrote elsewhere than the bound memory", o.Name)
						}
						got, err := o.Value.Tensor()
						if err != nil {
							t.Fatal(err)
						}
						sameTensor(t, o.Name, got, wantBy[o.Name])
						o.Value.Close()
					}
				})
			}
		})
	}
}

// A float16 output of dynamic shape, which Session.Run refuses: bound to a
// place, its shape is known after the run.
func TestBoundOutputShapeAfterRun(t *testing.T) {
	rt := boundRT(t)
	s := openBound(t, rt, engine.SessionSpec{Path: "testdata/cast_fp16_dyn.onnx"})
	if got := s.Outputs(); len(got) != 1 || got[0].Name != "y" || got[0].DType != engine.Float16 || got[0].Shape[0] != -1 {
		t.Fatalf("outputs %+v", got)
	}
	if err := s.BindOutputTo("y", CPUPlace()); err != nil {
		t.Fatal(err)
	}
	// Before any run there is nothing to read.
	if _, err := s.BoundOutputs(); err == nil || !strings.Contains(err.Error(), "no value") {
		t.Errorf("outputs before a run: %v", err)
	}
	for _, rows := range []int64{4, 1, 7} {
		x := f32([]int64{rows, 3}, func(i int) float32 { return float32(i) - 2.5 })
		if err := s.BindInput("x", hostTensor(t, rt, x)); err != nil {
			t.Fatal(err)
		}
		if err := s.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		outs, err := s.BoundOutputs()
		if err != nil {
			t.Fatal(err)
		}
		y, err := outs[0].Value.Tensor()
		if err != nil {
			t.Fatal(err)
		}
		outs[0].Value.Close()
		if y.DType != engine.Float16 || !equalShape(y.Shape, []int64{rows, 3}) {
			t.Fatalf("rows %d: y %s %v", rows, y.DType, y.Shape)
		}
		for i, f := range x.F32 {
			// Every value here (k - 2.5) is exact in float16.
			if got := binary.LittleEndian.Uint16(y.Raw[2*i:]); got != fp16(f) {
				t.Fatalf("rows %d: y[%d] = %#04x, want %#04x", rows, i, got, fp16(f))
			}
		}
	}
}

// fp16 converts small half-integers exactly (enough for the tests).
func fp16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	if f == 0 {
		return sign
	}
	exp := int(b>>23&0xff) - 127 + 15
	return sign | uint16(exp)<<10 | uint16(b>>13&0x3ff)
}

// Writing new data into bound memory and running again reuses the binding
// (host memory read by the CPU provider: read at every run; on CUDA a host
// input is copied at bind time, see BindInput); rebinding with another batch
// size changes the outputs' shapes.
func TestBoundRebindAndRerun(t *testing.T) {
	rt := boundRT(t)
	s := openBound(t, rt, engine.SessionSpec{Path: "testdata/ops_dyn.onnx"})
	shape := []int64{2, 4}
	av, ah := hostValue(t, rt, engine.Float32, shape, nil)
	bv, bh := hostValue(t, rt, engine.Float32, shape, nil)
	nv, nh := hostValue(t, rt, engine.Int64, []int64{2}, nil)
	sv, sh := hostValue(t, rt, engine.Float32, shape, nil)
	for name, v := range map[string]*Value{"a": av, "b": bv, "n": nv} {
		if err := s.BindInput(name, v); err != nil {
			t.Fatal(err)
		}
		v.Close() // the binding keeps its own reference
	}
	if err := s.BindOutput("sum", sv); err != nil {
		t.Fatal(err)
	}
	for _, o := range []string{"sq", "gt"} {
		if err := s.BindOutputTo(o, CPUPlace()); err != nil {
			t.Fatal(err)
		}
	}
	sums := liveF32(sh)
	for round := range 3 {
		a, b := liveF32(ah), liveF32(bh)
		for i := range a {
			a[i] = float32(round*10 + i)
			b[i] = float32(i % 3)
		}
		ns := []int64{int64(round), int64(round + 1)}
		copy(nh.Bytes(), int64Bytes(ns))
		if err := s.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		for i := range sums {
			if sums[i] != a[i]+b[i] {
				t.Fatalf("round %d: sum[%d] = %v, want %v", round, i, sums[i], a[i]+b[i])
			}
		}
		outs, err := s.BoundOutputs()
		if err != nil {
			t.Fatal(err)
		}
		sq, _ := outs[1].Value.Tensor()
		if outs[1].Name != "sq" || !bytes.Equal(sq.Raw, int64Bytes([]int64{ns[0] * ns[0], ns[1] * ns[1]})) {
			t.Fatalf("round %d: %s = %v", round, outs[1].Name, sq.Raw)
		}
		for _, o := range outs {
			o.Value.Close()
		}
	}

	// Rebind with five rows: the preallocated sum must change too.
	s5 := map[string]*engine.Tensor{
		"a": f32([]int64{5, 4}, func(i int) float32 { return float32(i) }),
		"b": f32([]int64{5, 4}, func(i int) float32 { return 1 }),
		"n": i64(1, 2, 3, 4, 5),
	}
	for name, x := range s5 {
		if err := s.BindInput(name, hostTensor(t, rt, x)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.BindOutputTo("sum", CPUPlace()); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	outs, err := s.BoundOutputs()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, o := range outs {
			o.Value.Close()
		}
	}()
	want := map[string][]int64{"sum": {5, 4}, "sq": {5}, "gt": {5, 4}}
	for _, o := range outs {
		if !equalShape(o.Value.Shape(), want[o.Name]) {
			t.Errorf("%s shape %v, want %v", o.Name, o.Value.Shape(), want[o.Name])
		}
	}
	// Clearing the outputs leaves none bound; clearing the inputs makes the
	// next run fail for want of them, not crash.
	if err := s.ClearOutputs(); err != nil {
		t.Fatal(err)
	}
	if got, err := s.BoundOutputs(); err != nil || len(got) != 0 {
		t.Errorf("after ClearOutputs: %v, %v", got, err)
	}
	if err := s.BindOutputTo("sum", CPUPlace()); err != nil {
		t.Fatal(err)
	}
	if err := s.ClearInputs(); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("run without inputs succeeded")
	}
	// The ORT-allocated outputs taken before stay readable.
	if sum, err := outs[0].Value.Tensor(); err != nil || sum.F32[19] != 20 {
		t.Errorf("earlier output after clearing: %v, %v", sum, err)
	}
}

// liveF32 views host memory as float32s, without copying.
func liveF32(h *HostMemory) []float32 {
	b := h.Bytes()
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

func TestBoundErrors(t *testing.T) {
	rt := boundRT(t)
	ok := func(v *Value, _ *HostMemory) *Value { return v }
	cases := []struct {
		name string
		do   func(t *testing.T, s *BoundSession) error
		want string
	}{
		{"unknown input", func(t *testing.T, s *BoundSession) error {
			return s.BindInput("c", ok(hostValue(t, rt, engine.Float32, []int64{1, 4}, nil)))
		}, `no input named "c"`},
		{"unknown output", func(t *testing.T, s *BoundSession) error {
			return s.BindOutput("prod", ok(hostValue(t, rt, engine.Float32, []int64{1, 4}, nil)))
		}, `no output named "prod"`},
		{"unknown output to place", func(t *testing.T, s *BoundSession) error { return s.BindOutputTo("a", CPUPlace()) },
			`no output named "a"`},
		{"wrong dtype", func(t *testing.T, s *BoundSession) error {
			return s.BindInput("a", ok(hostValue(t, rt, engine.Int64, []int64{1, 4}, nil)))
		}, "input a is float32, value is int64"},
		{"wrong rank", func(t *testing.T, s *BoundSession) error {
			return s.BindInput("a", ok(hostValue(t, rt, engine.Float32, []int64{4}, nil)))
		}, "input a has shape [-1 4], value has [4]"},
		{"wrong fixed dim", func(t *testing.T, s *BoundSession) error {
			return s.BindOutput("sum", ok(hostValue(t, rt, engine.Float32, []int64{2, 5}, nil)))
		}, "output sum has shape [-1 4], value has [2 5]"},
		{"closed value", func(t *testing.T, s *BoundSession) error {
			v, _ := hostValue(t, rt, engine.Float32, []int64{1, 4}, nil)
			v.Close()
			return s.BindInput("a", v)
		}, engine.ErrClosed.Error()},
		{"nil value", func(t *testing.T, s *BoundSession) error { return s.BindInput("a", nil) }, "nil value for a"},
		{"buffer too small", func(t *testing.T, s *BoundSession) error {
			h, _ := NewHostMemory(8)
			defer h.Free()
			_, err := rt.WrapTensor(CPUPlace(), h.Ptr(), 8, engine.Float32, []int64{1, 4})
			return err
		}, "needs 16 bytes, have 8"},
		{"negative dim", func(t *testing.T, s *BoundSession) error {
			_, err := rt.WrapTensor(CPUPlace(), 1, 64, engine.Float32, []int64{-1, 4})
			return err
		}, "negative dimension"},
		{"nil pointer", func(t *testing.T, s *BoundSession) error {
			_, err := rt.WrapTensor(CPUPlace(), 0, 64, engine.Float32, []int64{1, 4})
			return err
		}, "nil data pointer"},
		{"unknown dtype", func(t *testing.T, s *BoundSession) error {
			_, err := rt.WrapTensor(CPUPlace(), 1, 64, engine.DType(42), []int64{1})
			return err
		}, "unsupported element type"},
		// The next ones pass the bind checks and fail in ORT's run.
		{"batch sizes disagree", func(t *testing.T, s *BoundSession) error {
			bindOps(t, rt, s, 2, 3, 2)
			return s.Run(context.Background())
		}, "ort: run"},
		{"output of the wrong batch", func(t *testing.T, s *BoundSession) error {
			bindOps(t, rt, s, 2, 2, 2)
			if err := s.BindOutput("sum", ok(hostValue(t, rt, engine.Float32, []int64{3, 4}, nil))); err != nil {
				return err
			}
			return s.Run(context.Background())
		}, "ort: run"},
		{"input missing", func(t *testing.T, s *BoundSession) error {
			bindOps(t, rt, s, 2, 2, 2)
			s.ClearInputs()
			if err := s.BindInput("a", ok(hostValue(t, rt, engine.Float32, []int64{2, 4}, nil))); err != nil {
				return err
			}
			return s.Run(context.Background())
		}, "ort: run"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := openBound(t, rt, engine.SessionSpec{Path: "testdata/ops_dyn.onnx"})
			err := c.do(t, s)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
			// The session is still usable after the error.
			s.ClearInputs()
			s.ClearOutputs()
			bindOps(t, rt, s, 2, 2, 2)
			if err := s.Run(context.Background()); err != nil {
				t.Fatalf("run after the error: %v", err)
			}
		})
	}
	if _, err := rt.OpenBound(context.Background(), engine.SessionSpec{Path: "testdata/ops_dyn.onnx", Inputs: []string{"z"}}); err == nil {
		t.Error("a spec input that does not exist was accepted")
	}
	if _, err := rt.OpenBound(context.Background(), engine.SessionSpec{Path: "testdata/missing.onnx"}); err == nil {
		t.Error("a missing model was accepted")
	}
}

// bindOps binds a, b and n of ops_dyn with na, nb and nn rows, sum and gt
// to host memory the run allocates.
func bindOps(t *testing.T, rt *Runtime, s *BoundSession, na, nb, nn int64) {
	t.Helper()
	for name, x := range map[string]*engine.Tensor{
		"a": f32([]int64{na, 4}, func(i int) float32 { return float32(i) }),
		"b": f32([]int64{nb, 4}, func(i int) float32 { return 2 }),
		"n": &engine.Tensor{DType: engine.Int64, Shape: []int64{nn}, Raw: make([]byte, 8*nn)},
	} {
		if err := s.BindInput(name, hostTensor(t, rt, x)); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range []string{"sum", "sq", "gt"} {
		if err := s.BindOutputTo(o, CPUPlace()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBoundCancel(t *testing.T) {
	if testing.Short() {
		t.Skip("ISNet at 1024² takes seconds")
	}
	rt := boundRT(t)
	s := openBound(t, rt, engine.SessionSpec{Path: isnetPath(t)})
	if err := s.BindInput("input", hostTensor(t, rt, isnetInput(0))); err != nil {
		t.Fatal(err)
	}
	if err := s.BindOutputTo("output", CPUPlace()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if err := s.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v", err)
	}
	if err := s.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("run with a cancelled ctx: %v", err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer dcancel()
	if err := s.Run(dctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("run past its deadline: %v", err)
	}
	if err := s.Run(context.Background()); err != nil {
		t.Fatalf("run after cancelling: %v", err)
	}
	outs, err := s.BoundOutputs()
	if err != nil {
		t.Fatal(err)
	}
	defer outs[0].Value.Close()
	if !equalShape(outs[0].Value.Shape(), []int64{1, 1, 1024, 1024}) {
		t.Errorf("mask shape %v", outs[0].Value.Shape())
	}
}

func TestBoundClose(t *testing.T) {
	rt := boundRT(t)
	s, err := rt.OpenBound(context.Background(), engine.SessionSpec{Path: "testdata/ops_dyn.onnx"})
	if err != nil {
		t.Fatal(err)
	}
	bindOps(t, rt, s, 2, 2, 2)
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	outs, err := s.BoundOutputs()
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// ORT's output memory outlives the session until the value is closed.
	sum, err := outs[0].Value.Tensor()
	if err != nil || sum.F32[5] != 7 {
		t.Errorf("output after the session closed: %v, %v", sum, err)
	}
	for _, o := range outs {
		o.Value.Close()
		o.Value.Close()
	}
	if _, err := outs[0].Value.Tensor(); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("closed value read: %v", err)
	}
	v, _ := hostValue(t, rt, engine.Float32, []int64{2, 4}, nil)
	for name, err := range map[string]error{
		"BindInput":    s.BindInput("a", v),
		"BindOutput":   s.BindOutput("sum", v),
		"BindOutputTo": s.BindOutputTo("sum", CPUPlace()),
		"ClearInputs":  s.ClearInputs(),
		"ClearOutputs": s.ClearOutputs(),
		"Run":          s.Run(context.Background()),
	} {
		if !errors.Is(err, engine.ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
	if _, err := s.BoundOutputs(); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("BoundOutputs after Close: %v", err)
	}
	h, _ := NewHostMemory(4)
	h.Free()
	h.Free()
}

// Sessions run in parallel; one session serialises its callers.
func TestBoundConcurrent(t *testing.T) {
	rt := boundRT(t)
	var wg sync.WaitGroup
	shared := openBound(t, rt, engine.SessionSpec{Path: "testdata/ops_dyn.onnx"})
	bindOps(t, rt, shared, 3, 3, 3)
	errs := make(chan error, 8)
	for i := range 4 {
		own := openBound(t, rt, engine.SessionSpec{Path: "testdata/ops_dyn.onnx"})
		bindOps(t, rt, own, int64(i+1), int64(i+1), int64(i+1))
		for _, s := range []*BoundSession{own, shared} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					if err := s.Run(context.Background()); err != nil {
						errs <- err
						return
					}
					outs, err := s.BoundOutputs()
					if err != nil {
						errs <- err
						return
					}
					for _, o := range outs {
						o.Value.Close()
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// The pinned library is the CPU build: CUDA memory is refused with
// ErrNoCUDA, and GPU providers fall back to the CPU as in Open.
func TestBoundCUDAOnCPULibrary(t *testing.T) {
	rt := boundRT(t)
	h, _ := NewHostMemory(64)
	defer h.Free()
	for _, p := range []Place{CUDAPlace(0), CUDAPinnedPlace(0), CUDAPlace(3)} {
		if _, err := rt.WrapTensor(p, h.Ptr(), 64, engine.Float32, []int64{2, 4}); !errors.Is(err, ErrNoCUDA) {
			t.Errorf("WrapTensor in %s: %v", p, err)
		}
	}
	dir := t.TempDir()
	s := openBound(t, rt, engine.SessionSpec{Path: "testdata/ops_dyn.onnx",
		Providers: []engine.Provider{engine.TensorRT, engine.CUDA, engine.CPU}, DeviceID: 0,
		TensorRTCacheDir: dir, FP16: true, IntraOpThreads: 2})
	if got := s.Providers(); len(got) != 1 || got[0] != engine.CPU {
		t.Errorf("providers %v, want [cpu]", got)
	}
	if err := s.BindOutputTo("sum", CUDAPlace(0)); !errors.Is(err, ErrNoCUDA) {
		t.Errorf("BindOutputTo cuda:0: %v", err)
	}
	bindOps(t, rt, s, 2, 2, 2)
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Past our check, ORT itself must refuse CUDA memory with an error (it
	// has no CUDA data transfer to copy it to the CPU provider), not crash.
	v, err := rt.wrap(CUDAPlace(0), h.Ptr(), 32, engine.Float32, []int64{2, 4})
	if err != nil {
		t.Logf("ORT refused a CUDA tensor: %v", err)
		return
	}
	defer v.Close()
	if v.Place() != CUDAPlace(0) {
		t.Errorf("place %s", v.Place())
	}
	err = s.BindInput("a", v)
	if err == nil {
		err = s.Run(context.Background())
	}
	if err == nil {
		t.Fatal("the CPU library ran on memory it was told is CUDA memory")
	}
	t.Logf("ORT: %v", err)
}

// Open and OpenBound pass these options to the CUDA and TensorRT providers.
func TestProviderOptions(t *testing.T) {
	cases := []struct {
		name string
		p    engine.Provider
		spec engine.SessionSpec
		want map[string]string
	}{
		{"cuda", engine.CUDA, engine.SessionSpec{DeviceID: 1, FP16: true, TensorRTCacheDir: "/c"},
			map[string]string{"device_id": "1"}},
		{"cuda options", engine.CUDA, engine.SessionSpec{DeviceID: 1, CUDAOptions: map[string]string{"prefer_nhwc": "1", "device_id": "3"}},
			map[string]string{"device_id": "1", "prefer_nhwc": "1"}},
		{"tensorrt ignores cuda options", engine.TensorRT, engine.SessionSpec{DeviceID: 2, CUDAOptions: map[string]string{"prefer_nhwc": "1"}},
			map[string]string{"device_id": "2"}},
		{"tensorrt", engine.TensorRT, engine.SessionSpec{DeviceID: 2},
			map[string]string{"device_id": "2"}},
		{"tensorrt fp16 cache", engine.TensorRT, engine.SessionSpec{FP16: true, TensorRTCacheDir: "/var/cache/trt"},
			map[string]string{"device_id": "0", "trt_fp16_enable": "1", "trt_engine_cache_enable": "1", "trt_engine_cache_path": "/var/cache/trt"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := providerOptions(c.p, c.spec)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
	if _, err := providerOptions("rocm", engine.SessionSpec{}); err == nil {
		t.Error("unknown provider accepted")
	}
}
