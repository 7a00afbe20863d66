package kernels

import (
	"errors"
	"math"
	"testing"
)

func TestResizeMask(t *testing.T) {
	r := newRand(3)
	for _, tc := range []struct {
		name           string
		sw, sh, dw, dh int
		lo, hi         float32
		srcLo, srcHi   float32
	}{
		{"upscale clamp", 7, 5, 23, 17, 0, 1, -0.5, 1.5},
		{"downscale clamp", 40, 30, 9, 11, 0, 1, -0.5, 1.5},
		{"min-max normalise", 16, 16, 37, 29, -3, 5, -3, 5},
		{"logits range", 13, 9, 13, 9, -8, 8, -10, 10},
		{"one pixel", 1, 1, 5, 3, 0, 1, 0.2, 0.9},
		{"parallel rows", 64, 48, 300, 260, 0.1, 0.9, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := randFloats(r, tc.sw*tc.sh, tc.srcLo, tc.srcHi)
			dst := make([]float32, tc.dw*tc.dh)
			nanFill(dst)
			if err := (CPU{}).ResizeMask(dst, tc.dw, tc.dh, src, tc.sw, tc.sh, tc.lo, tc.hi); err != nil {
				t.Fatal(err)
			}
			get := func(x, y int) float64 { return float64(src[y*tc.sw+x]) }
			for y := range tc.dh {
				for x := range tc.dw {
					v := refBilinear(get, tc.sw, tc.sh, tc.dw, tc.dh, x, y)
					want := math.Min(math.Max((v-float64(tc.lo))/float64(tc.hi-tc.lo), 0), 1)
					if got := dst[y*tc.dw+x]; !(math.Abs(float64(got)-want) <= 2e-6) {
						t.Fatalf("(%d,%d) = %v, want %v", x, y, got, want)
					}
				}
			}
		})
	}
}

// TestResizeMaskSpecial checks the exact paths: same size is a copy, so
// clamping, NaN -> 0 and Inf are visible bit for bit.
func TestResizeMaskSpecial(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	src := []float32{-1, 0, 0.25, 1, 2, nan, inf, float32(math.Inf(-1))}
	want := []float32{0, 0, 0.25, 1, 1, 0, 1, 0}
	dst := make([]float32, len(src))
	nanFill(dst)
	if err := (CPU{}).ResizeMask(dst, 4, 2, src, 4, 2, 0, 1); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if dst[i] != want[i] {
			t.Errorf("dst[%d]=%v from %v, want %v", i, dst[i], src[i], want[i])
		}
	}
	// Normalisation by (v-lo)/(hi-lo) with dyadic values is exact.
	src = []float32{-2, -1, 0, 2}
	want = []float32{0, 0.25, 0.5, 1}
	dst = make([]float32, 4)
	nanFill(dst)
	if err := (CPU{}).ResizeMask(dst, 2, 2, src, 2, 2, -2, 2); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if dst[i] != want[i] {
			t.Errorf("normalised dst[%d]=%v, want %v", i, dst[i], want[i])
		}
	}
}

func TestResizeMaskErrors(t *testing.T) {
	src, dst := make([]float32, 6), make([]float32, 12)
	nan := float32(math.NaN())
	for name, err := range map[string]error{
		"hi == lo":  CPU{}.ResizeMask(dst, 4, 3, src, 3, 2, 1, 1),
		"hi < lo":   CPU{}.ResizeMask(dst, 4, 3, src, 3, 2, 1, 0),
		"NaN bound": CPU{}.ResizeMask(dst, 4, 3, src, 3, 2, 0, nan),
		"src len":   CPU{}.ResizeMask(dst, 4, 3, src, 3, 3, 0, 1),
		"dst len":   CPU{}.ResizeMask(dst, 4, 4, src, 3, 2, 0, 1),
		"zero size": CPU{}.ResizeMask(dst[:0], 0, 3, src, 3, 2, 0, 1),
	} {
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
		}
	}
}
