package kernels

import (
	"errors"
	"fmt"
	"math"
	"testing"
)

// tileStarts covers [0,n) with tiles of size t stepping by t-overlap, the
// last one pulled back to end at n (as tiled inference does).
func tileStarts(n, t, overlap int) []int {
	var s []int
	for p := 0; ; p += t - overlap {
		if p+t >= n {
			s = append(s, max(n-t, 0))
			return s
		}
		s = append(s, p)
	}
}

func TestBlendTileReproducesCanvas(t *testing.T) {
	tests := []struct {
		c, H, W, th, tw, overlap int
		unity                    bool // tiles fit exactly: weights sum to 1
	}{
		{3, 37, 53, 16, 16, 4, false},
		{3, 37, 53, 20, 24, 7, false},
		{1, 40, 40, 16, 16, 4, true}, // 3*12+4 = 40
		{2, 29, 31, 29, 31, 5, true}, // single tile touching all borders
		{3, 30, 30, 10, 10, 0, true},
		{3, 33, 47, 12, 12, 6, false},
		{4, 25, 19, 8, 7, 3, false},
		{3, 64, 64, 32, 32, 16, false},
	}
	var k CPU
	r := newRand(10)
	for _, tc := range tests {
		name := fmt.Sprintf("c%d_%dx%d_tile%dx%d_ov%d", tc.c, tc.W, tc.H, tc.tw, tc.th, tc.overlap)
		t.Run(name, func(t *testing.T) {
			plane := tc.H * tc.W
			canvas := randFloats(r, tc.c*plane, -2, 5)
			acc := make([]float32, tc.c*plane)
			wsum := make([]float32, plane)
			for _, y0 := range tileStarts(tc.H, tc.th, tc.overlap) {
				for _, x0 := range tileStarts(tc.W, tc.tw, tc.overlap) {
					tile := make([]float32, tc.c*tc.th*tc.tw)
					for ch := range tc.c {
						for j := range tc.th {
							for i := range tc.tw {
								tile[(ch*tc.th+j)*tc.tw+i] = canvas[ch*plane+(y0+j)*tc.W+x0+i]
							}
						}
					}
					if err := k.BlendTile(acc, wsum, tc.c, tc.H, tc.W, tile, tc.th, tc.tw, x0, y0, tc.overlap); err != nil {
						t.Fatal(err)
					}
				}
			}
			for i, s := range wsum {
				if !(s > 0) {
					t.Fatalf("pixel %d has weight sum %v", i, s)
				}
				if tc.unity && math.Abs(float64(s)-1) > 1e-6 {
					t.Fatalf("pixel %d: weight sum %v, want 1", i, s)
				}
			}
			if err := k.NormalizeBlend(acc, wsum, tc.c); err != nil {
				t.Fatal(err)
			}
			for i := range canvas {
				if d := math.Abs(float64(acc[i] - canvas[i])); !(d <= 1e-6*math.Max(1, math.Abs(float64(canvas[i])))) {
					t.Fatalf("element %d: got %v want %v", i, acc[i], canvas[i])
				}
			}
		})
	}
}

func TestNormalizeBlendUncovered(t *testing.T) {
	var k CPU
	acc := []float32{2, 3, 4, 6}
	wsum := []float32{0.5, 0}
	if err := k.NormalizeBlend(acc, wsum, 2); err != nil {
		t.Fatal(err)
	}
	want := []float32{4, 0, 8, 0}
	for i := range want {
		if acc[i] != want[i] {
			t.Fatalf("got %v want %v", acc, want)
		}
	}
}

func TestBlendTileErrors(t *testing.T) {
	var k CPU
	acc := make([]float32, 2*4*5)
	wsum := make([]float32, 4*5)
	tile := randFloats(newRand(11), 2*2*3, 0.1, 1)
	tests := []struct {
		name                    string
		acc, wsum               []float32
		c, H, W                 int
		tile                    []float32
		th, tw, x0, y0, overlap int
	}{
		{"outside right", acc, wsum, 2, 4, 5, tile, 2, 3, 3, 0, 1},
		{"outside bottom", acc, wsum, 2, 4, 5, tile, 2, 3, 0, 3, 1},
		{"negative origin", acc, wsum, 2, 4, 5, tile, 2, 3, -1, 0, 1},
		{"short tile", acc, wsum, 2, 4, 5, tile[:11], 2, 3, 0, 0, 1},
		{"short acc", acc[:39], wsum, 2, 4, 5, tile, 2, 3, 0, 0, 1},
		{"short wsum", acc, wsum[:19], 2, 4, 5, tile, 2, 3, 0, 0, 1},
		{"negative overlap", acc, wsum, 2, 4, 5, tile, 2, 3, 0, 0, -1},
		{"zero channels", acc, wsum, 0, 4, 5, tile, 2, 3, 0, 0, 1},
		{"zero tile", acc, wsum, 2, 4, 5, tile, 0, 3, 0, 0, 1},
	}
	for _, tc := range tests {
		err := k.BlendTile(tc.acc, tc.wsum, tc.c, tc.H, tc.W, tc.tile, tc.th, tc.tw, tc.x0, tc.y0, tc.overlap)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: got %v, want ErrInvalidArgument", tc.name, err)
		}
	}
	if err := k.NormalizeBlend(acc[:39], wsum, 2); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("NormalizeBlend short acc: got %v", err)
	}
	if err := k.NormalizeBlend(acc, wsum, 0); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("NormalizeBlend zero channels: got %v", err)
	}
}
