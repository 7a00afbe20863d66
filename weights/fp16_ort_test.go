//go:build cgo

package weights

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
)

// runCase runs a model of the table on ONNX Runtime's CPU provider.
func runCase(t *testing.T, rt engine.Runtime, path string, outs []string, x []float32) []*engine.Tensor {
	t.Helper()
	ctx := context.Background()
	s, err := rt.Open(ctx, engine.SessionSpec{Path: path, Inputs: []string{"x"}, Outputs: outs, Providers: []engine.Provider{engine.CPU}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in, err := engine.NewFloat32(append([]float32(nil), x...), 1, 3, 8, 8)
	if err != nil {
		t.Fatal(err)
	}
	y, err := s.Run(ctx, []*engine.Tensor{in}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

// Each converted graph loads in ONNX Runtime, takes and gives float32, and
// computes what the float32 graph does within float16's precision: |Δ| ≤
// 0.01 + 0.01·|y| per value (a few units in the last place of a half
// after a handful of ops).
func TestFloat16ComputeRuns(t *testing.T) {
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	x := wave(3*8*8, 1, 0.3)
	for _, c := range fp16Cases {
		t.Run(c.name, func(t *testing.T) {
			p32 := writeCase(t, c, 15)
			b, err := os.ReadFile(p32)
			if err != nil {
				t.Fatal(err)
			}
			p16 := filepath.Join(t.TempDir(), "fp16.onnx")
			if err := os.WriteFile(p16, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Float16Compute(p16); err != nil {
				t.Fatal(err)
			}
			want := runCase(t, rt, p32, c.outs, x)
			got := runCase(t, rt, p16, c.outs, x)
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
						t.Fatalf("%s[%d]: float16 %v, float32 %v", o, j, got[i].F32[j], w)
					}
				}
				t.Logf("%s %v: max |Δ| %.2g, mean %.2g", o, want[i].Shape, worst, sum/float64(len(want[i].F32)))
			}
		})
	}
}

// runFloat16Upscalers runs each float16 upscaler and its float32 sibling
// on the 64×48 photo crop: the outputs, clamped to [0,1] and quantised to
// 8 bits as the pipeline writes them, must differ by at most
// maxFP16MeanDiff/255 on average, and the float16 build must still clear
// its sibling's PSNR floor.
func runFloat16Upscalers(t *testing.T, s *Store) {
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	p := loadPhoto(t)
	for _, name := range sortedFP16() {
		base := ncnnFP16[name].base
		var outs [2][]float32
		var psnrs [2]float64
		var took [2]time.Duration
		for i, n := range []string{base, name} {
			m, err := s.Get(n)
			if err != nil {
				t.Fatal(err)
			}
			path, err := s.Path(m, "model")
			if err != nil {
				t.Fatal(err)
			}
			outs[i], psnrs[i], took[i] = upscale(t, rt, path, ncnnModels[base].scale, p)
		}
		q := func(v float32) float64 { return math.Round(float64(min(max(v, 0), 1)) * 255) }
		var sum, worst float64
		for j, v := range outs[0] {
			d := math.Abs(q(outs[1][j]) - q(v))
			sum += d
			worst = max(worst, d)
		}
		mean := sum / float64(len(outs[0]))
		t.Logf("%s: mean |Δ| %.3f/255 (max %.0f/255) against float32; PSNR %.2f dB (float32 %.2f); CPU %v (float32 %v)",
			name, mean, worst, psnrs[1], psnrs[0], took[1].Round(time.Millisecond), took[0].Round(time.Millisecond))
		if mean > maxFP16MeanDiff {
			t.Errorf("%s: differs from %s by %.3f/255 on average, want ≤ %.2f", name, base, mean, maxFP16MeanDiff)
		}
		if psnrs[1] < minPSNR[base] {
			t.Errorf("%s: PSNR %.2f dB, want ≥ %.1f", name, psnrs[1], minPSNR[base])
		}
	}
}

// maxFP16MeanDiff bounds the mean 8-bit difference between a float16
// upscaler and its float32 sibling.
const maxFP16MeanDiff = 1.0
