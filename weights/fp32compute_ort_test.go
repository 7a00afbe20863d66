//go:build cgo

package weights

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
)

// Each converted graph loads in ONNX Runtime (CPU), takes and gives
// float32 as its original does, and computes what the float16 original
// computes within float16's precision: |Δ| ≤ 0.01 + 0.01·|y| per value.
// The original is the less precise of the two, so the bound is its error
// (the largest |Δ|, a few units, is on "encodings and edges"' channel near
// -65504, where float16's spacing is 32).
func TestFloat32ComputeRuns(t *testing.T) {
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	x := wave(3*8*8, 1, 0.3)
	for _, c := range fp32Cases {
		t.Run(c.name, func(t *testing.T) {
			p16 := writeCase(t, c.fp16Case, 17)
			b, err := os.ReadFile(p16)
			if err != nil {
				t.Fatal(err)
			}
			p32 := filepath.Join(t.TempDir(), "fp32.onnx")
			if err := os.WriteFile(p32, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Float32Compute(p32); err != nil {
				t.Fatal(err)
			}
			want := runCase(t, rt, p16, c.outs, x)
			got := runCase(t, rt, p32, c.outs, x)
			for i, o := range c.outs {
				if got[i].DType != engine.Float32 || len(got[i].F32) != len(want[i].F32) {
					t.Fatalf("%s: %s %v, want float32 %v", o, got[i].DType, got[i].Shape, want[i].Shape)
				}
				var worst, sum float64
				for j, w := range want[i].F32 {
					d := math.Abs(float64(got[i].F32[j] - w))
					sum += d
					worst = max(worst, d)
					if d > 0.01+0.01*math.Abs(float64(w)) {
						t.Fatalf("%s[%d]: float32 %v, float16 original %v", o, j, got[i].F32[j], w)
					}
				}
				t.Logf("%s %v: max |Δ| %.2g, mean %.2g", o, want[i].Shape, worst, sum/float64(len(want[i].F32)))
			}
		})
	}
}
