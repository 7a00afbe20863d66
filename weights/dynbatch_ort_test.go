//go:build cgo

package weights

import (
	"context"
	"math"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
)

// ONNX Runtime refuses batch 3 on the pinned model and runs it on the
// rewritten one, which then reports a dynamic dim 0 (what the engine's pool
// needs to batch) and gives for each row what a batch-1 run of that row
// gives.
func TestDynamicBatchRuns(t *testing.T) {
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const row = 2 * 3 * 3
	x := make([]float32, 3*row)
	for i := range x {
		x[i] = float32(math.Sin(float64(i))) * 2
	}
	open := func(p string) engine.Session {
		s, err := rt.Open(ctx, engine.SessionSpec{Path: p, Inputs: []string{"x"}, Outputs: []string{"y", "z"},
			Providers: []engine.Provider{engine.CPU}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	run := func(s engine.Session, x []float32, n int64) ([]*engine.Tensor, error) {
		in, err := engine.NewFloat32(append([]float32(nil), x...), n, 2, 3, 3)
		if err != nil {
			t.Fatal(err)
		}
		return s.Run(ctx, []*engine.Tensor{in}, nil)
	}

	p := batchModel(t, 1)
	if _, err := run(open(p), x, 3); err == nil {
		t.Fatal("the pinned model ran at batch 3; the test model does not pin its batch")
	}
	if _, err := DynamicBatch(p); err != nil {
		t.Fatal(err)
	}
	s := open(p)
	for _, ti := range append(s.Inputs(), s.Outputs()...) {
		if ti.Shape[0] >= 0 {
			t.Errorf("%s: dim 0 = %d, want dynamic", ti.Name, ti.Shape[0])
		}
	}
	all, err := run(s, x, 3)
	if err != nil {
		t.Fatal(err)
	}
	for o, per := range []int{4 * 3 * 3, 2 * 3 * 3} {
		if all[o].Shape[0] != 3 || len(all[o].F32) != 3*per {
			t.Fatalf("output %d: shape %v", o, all[o].Shape)
		}
	}
	for i := range 3 {
		one, err := run(s, x[i*row:(i+1)*row], 1)
		if err != nil {
			t.Fatal(err)
		}
		for o, per := range []int{4 * 3 * 3, 2 * 3 * 3} {
			got, want := all[o].F32[i*per:(i+1)*per], one[o].F32
			for j := range want {
				if d := math.Abs(float64(got[j] - want[j])); d > 1e-6 {
					t.Fatalf("output %d row %d [%d]: batched %v, alone %v", o, i, j, got[j], want[j])
				}
			}
		}
	}
}
