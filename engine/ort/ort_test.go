//go:build cgo

package ort

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/weights"
)

func runtimeT(t *testing.T) engine.Runtime {
	t.Helper()
	rt, err := Init(Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func isnetPath(t *testing.T) string {
	t.Helper()
	s, err := weights.Open(testenv.DataDir(t))
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Get("isnet-general-use")
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Path(m, "model")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInfo(t *testing.T) {
	info := runtimeT(t).Info()
	if info.Version != "1.30.0" {
		t.Errorf("version %q, want 1.30.0 (the pinned library)", info.Version)
	}
	if n := len(info.Providers); n == 0 || info.Providers[n-1] != engine.CPU {
		t.Errorf("providers %v must end with cpu", info.Providers)
	}
	// The pinned library is the CPU build: both GPU providers must be
	// reported unavailable, with ORT's reason.
	for _, p := range []engine.Provider{engine.CUDA, engine.TensorRT} {
		if !strings.Contains(info.Unavailable[p], "providers_shared") {
			t.Errorf("%s unavailable reason %q", p, info.Unavailable[p])
		}
	}
}

func isnetInput(v float32) *engine.Tensor {
	data := make([]float32, 3*1024*1024)
	for i := range data {
		data[i] = v + float32(i%1024)/4096
	}
	t, _ := engine.NewFloat32(data, 1, 3, 1024, 1024)
	return t
}

func TestISNetRunFallbackAndConcurrency(t *testing.T) {
	rt := runtimeT(t)
	spec := engine.SessionSpec{Path: isnetPath(t), Inputs: []string{"input"}, Outputs: []string{"output"},
		// GPU providers first: the CPU library lacks them, so this must
		// fall back to the CPU provider rather than fail.
		Providers: []engine.Provider{engine.TensorRT, engine.CUDA, engine.CPU}}
	s, err := rt.Open(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Providers(); len(got) != 1 || got[0] != engine.CPU {
		t.Errorf("providers %v, want [cpu]", got)
	}
	in := s.Inputs()
	if len(in) != 1 || in[0].DType != engine.Float32 || len(in[0].Shape) != 4 || in[0].Shape[1] != 3 {
		t.Errorf("inputs %+v", in)
	}
	// Two runs at once on one session must both succeed with equal results.
	var wg sync.WaitGroup
	outs := make([][]*engine.Tensor, 2)
	errs := make([]error, 2)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = s.Run(context.Background(), []*engine.Tensor{isnetInput(-0.2)}, nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	a, b := outs[0][0], outs[1][0]
	if a.DType != engine.Float32 || len(a.Shape) != 4 || a.Shape[2] != 1024 || len(a.F32) != 1024*1024 {
		t.Fatalf("output %s %v", a.DType, a.Shape)
	}
	for i := range a.F32 {
		if a.F32[i] < 0 || a.F32[i] > 1 || math.IsNaN(float64(a.F32[i])) {
			t.Fatalf("mask value %v at %d outside [0,1]", a.F32[i], i)
		}
		if a.F32[i] != b.F32[i] {
			t.Fatalf("concurrent runs differ at %d: %v vs %v", i, a.F32[i], b.F32[i])
		}
	}
	// Wrong input size is an error, not a crash.
	bad, _ := engine.NewFloat32(make([]float32, 10), 1, 10)
	if _, err := s.Run(context.Background(), []*engine.Tensor{bad}, nil); err == nil {
		t.Error("wrong shape accepted")
	}
}

func TestCancelInterruptsRun(t *testing.T) {
	rt := runtimeT(t)
	s, err := rt.Open(context.Background(), engine.SessionSpec{Path: isnetPath(t), Inputs: []string{"input"}, Outputs: []string{"output"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// ISNet at 1024² takes seconds here; cancelling 100 ms in must stop it
	// with the context's error instead of returning a result.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	out, err := s.Run(ctx, []*engine.Tensor{isnetInput(0)}, nil)
	if !errors.Is(err, context.Canceled) || out != nil {
		t.Fatalf("Run = %v, %v; want an error wrapping context.Canceled", out, err)
	}
	// A deadline works the same way.
	dctx, dcancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer dcancel()
	if _, err := s.Run(dctx, []*engine.Tensor{isnetInput(0)}, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run with deadline = %v", err)
	}
	// The session stays usable afterwards.
	if _, err := s.Run(context.Background(), []*engine.Tensor{isnetInput(0)}, nil); err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
}

func TestFloat16Outputs(t *testing.T) {
	rt := runtimeT(t)
	x := []float32{1, -2, 0.5, 65504, 3.140625, -0.0001}
	in, _ := engine.NewFloat32(x, 2, 3)
	s, err := rt.Open(context.Background(), engine.SessionSpec{Path: "testdata/cast_fp16.onnx", Inputs: []string{"x"}, Outputs: []string{"y"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Run(context.Background(), []*engine.Tensor{in}, nil)
	if err != nil {
		t.Fatal(err)
	}
	y := out[0]
	want := []uint16{0x3c00, 0xc000, 0x3800, 0x7bff, 0x4248, 0x868e}
	if y.DType != engine.Float16 || len(y.Raw) != 12 {
		t.Fatalf("output %s, %d bytes", y.DType, len(y.Raw))
	}
	for i, w := range want {
		if got := binary.LittleEndian.Uint16(y.Raw[2*i:]); got != w {
			t.Errorf("y[%d] = %#04x, want %#04x", i, got, w)
		}
	}
	// A float16 output of dynamic shape cannot be preallocated: a clear
	// error, not onnxruntime_go's byte-count bug.
	d, err := rt.Open(context.Background(), engine.SessionSpec{Path: "testdata/cast_fp16_dyn.onnx", Inputs: []string{"x"}, Outputs: []string{"y"}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Run(context.Background(), []*engine.Tensor{in}, nil); err == nil || !strings.Contains(err.Error(), "dynamic shape") {
		t.Errorf("dynamic fp16 output: %v", err)
	}
}

// TestUpstreamFloat16Bug asserts onnxruntime_go v1.27.0's bug with
// ORT-allocated 16-bit outputs, so that we notice when an upgrade fixes it
// and the preallocation workaround can go.
func TestUpstreamFloat16Bug(t *testing.T) {
	runtimeT(t)
	sess, err := ortgo.NewDynamicAdvancedSession("testdata/cast_fp16.onnx", []string{"x"}, []string{"y"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Destroy()
	x, _ := ortgo.NewTensor(ortgo.NewShape(2, 3), []float32{1, 2, 3, 4, 5, 6})
	defer x.Destroy()
	outs := []ortgo.Value{nil}
	err = sess.Run([]ortgo.Value{x}, outs)
	if err == nil {
		outs[0].Destroy()
		t.Fatal("onnxruntime_go now allocates float16 outputs correctly: drop the preallocation in session.Run")
	}
	if !strings.Contains(err.Error(), "not enough space") {
		t.Fatalf("unexpected error: %v", err)
	}
}
