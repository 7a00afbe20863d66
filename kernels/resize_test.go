package kernels

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"testing"
)

var (
	imagenetMean = [3]float32{0.485, 0.456, 0.406}
	imagenetStd  = [3]float32{0.229, 0.224, 0.225}
)

// refImageToTensor is the slow per-pixel reference in float64.
func refImageToTensor(src []uint8, w, h, stride, c, outW, outH int, scale float32, mean, std [3]float32) []float64 {
	out := make([]float64, 3*outW*outH)
	for k := range 3 {
		ch := k
		if c == 1 {
			ch = 0
		}
		get := func(x, y int) float64 { return float64(src[y*stride+x*c+ch]) }
		for y := range outH {
			for x := range outW {
				v := refBilinear(get, w, h, outW, outH, x, y)
				out[k*outW*outH+y*outW+x] = (v/float64(scale) - float64(mean[k])) / float64(std[k])
			}
		}
	}
	return out
}

type tensorCase struct {
	w, h, c, pad, outW, outH int
	scale                    float32
	mean, std                [3]float32
}

func tensorCases() []tensorCase {
	cases := []tensorCase{
		{w: 1, h: 1, c: 3, outW: 1, outH: 1},
		{w: 1, h: 1, c: 1, pad: 3, outW: 5, outH: 3},
		{w: 1, h: 1, c: 4, outW: 2, outH: 7},
		{w: 7, h: 5, c: 3, outW: 13, outH: 11},          // upscale
		{w: 37, h: 29, c: 3, pad: 5, outW: 8, outH: 6},  // downscale
		{w: 37, h: 29, c: 4, pad: 1, outW: 8, outH: 40}, // mixed
		{w: 16, h: 16, c: 1, pad: 2, outW: 16, outH: 16},
		{w: 10, h: 3, c: 4, outW: 3, outH: 10},
		{w: 64, h: 48, c: 3, pad: 7, outW: 1, outH: 1},
		{w: 50, h: 40, c: 3, outW: 300, outH: 200, scale: 1, mean: [3]float32{0, 0, 0}, std: [3]float32{1, 1, 1}},
	}
	r := newRand(1)
	for range 30 {
		cases = append(cases, tensorCase{
			w: 1 + r.IntN(40), h: 1 + r.IntN(40), c: []int{1, 3, 4}[r.IntN(3)], pad: r.IntN(9),
			outW: 1 + r.IntN(60), outH: 1 + r.IntN(60),
		})
	}
	for i := range cases {
		if cases[i].scale == 0 {
			cases[i].scale, cases[i].mean, cases[i].std = 255, imagenetMean, imagenetStd
		}
	}
	return cases
}

func TestImageToTensorMatchesReference(t *testing.T) {
	var k CPU
	r := newRand(2)
	for _, tc := range tensorCases() {
		name := fmt.Sprintf("%dx%dx%d+%d_to_%dx%d", tc.w, tc.h, tc.c, tc.pad, tc.outW, tc.outH)
		t.Run(name, func(t *testing.T) {
			stride := tc.w*tc.c + tc.pad
			// Leave the padding random too: it must never leak into results.
			src := randBytes(r, (tc.h-1)*stride+tc.w*tc.c)
			want := refImageToTensor(src, tc.w, tc.h, stride, tc.c, tc.outW, tc.outH, tc.scale, tc.mean, tc.std)
			got := make([]float32, len(want))
			nanFill(got)
			if err := k.ImageToTensor(got, src, tc.w, tc.h, stride, tc.c, tc.outW, tc.outH, tc.scale, tc.mean, tc.std); err != nil {
				t.Fatal(err)
			}
			for i := range want {
				// 1e-5 absolute for normalised data; relative for the
				// unnormalised 0..255 case.
				tol := 1e-5 * math.Max(1, math.Abs(want[i])/10)
				if d := math.Abs(float64(got[i]) - want[i]); !(d <= tol) {
					t.Fatalf("element %d: got %v want %v (diff %g)", i, got[i], want[i], d)
				}
			}
			// The F16 path must equal converting the F32 result.
			got16 := make([]uint16, len(want))
			for i := range got16 {
				got16[i] = 0x7e00 // NaN bits
			}
			if err := k.ImageToTensorF16(got16, src, tc.w, tc.h, stride, tc.c, tc.outW, tc.outH, tc.scale, tc.mean, tc.std); err != nil {
				t.Fatal(err)
			}
			for i := range got16 {
				if w := f32ToF16(got[i]); got16[i] != w {
					t.Fatalf("f16 element %d: got %#04x want %#04x", i, got16[i], w)
				}
			}
		})
	}
}

func TestImageToTensorDeterministic(t *testing.T) {
	var k CPU
	r := newRand(3)
	w, h, c := 123, 97, 3
	src := randBytes(r, w*h*c)
	run := func(procs int) []float32 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		dst := make([]float32, 3*301*257)
		if err := k.ImageToTensor(dst, src, w, h, w*c, c, 301, 257, 255, imagenetMean, imagenetStd); err != nil {
			t.Fatal(err)
		}
		return dst
	}
	a, b := run(1), run(7)
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("element %d differs between GOMAXPROCS 1 and 7: %v vs %v", i, a[i], b[i])
		}
	}
}

func TestImageToTensorErrors(t *testing.T) {
	var k CPU
	src := randBytes(newRand(4), 4*4*3)
	dst := make([]float32, 3*2*2)
	ones := [3]float32{1, 1, 1}
	tests := []struct {
		name                        string
		dst                         []float32
		src                         []uint8
		w, h, stride, c, outW, outH int
		scale                       float32
		std                         [3]float32
	}{
		{"zero width", dst, src, 0, 4, 12, 3, 2, 2, 1, ones},
		{"negative height", dst, src, 4, -1, 12, 3, 2, 2, 1, ones},
		{"bad channels", dst, src, 4, 4, 12, 2, 2, 2, 1, ones},
		{"short stride", dst, src, 4, 4, 11, 3, 2, 2, 1, ones},
		{"short src", dst, src[:47], 4, 4, 12, 3, 2, 2, 1, ones},
		{"stride past src", dst, src, 4, 4, 13, 3, 2, 2, 1, ones},
		{"zero output", dst, src, 4, 4, 12, 3, 0, 2, 1, ones},
		{"dst too long", make([]float32, 13), src, 4, 4, 12, 3, 2, 2, 1, ones},
		{"dst too short", dst[:11], src, 4, 4, 12, 3, 2, 2, 1, ones},
		{"zero scale", dst, src, 4, 4, 12, 3, 2, 2, 0, ones},
		{"zero std", dst, src, 4, 4, 12, 3, 2, 2, 1, [3]float32{1, 0, 1}},
		{"huge", dst, src, math.MaxInt / 2, 4, 12, 3, 2, 2, 1, ones},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := k.ImageToTensor(tc.dst, tc.src, tc.w, tc.h, tc.stride, tc.c, tc.outW, tc.outH, tc.scale, imagenetMean, tc.std)
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("ImageToTensor: got %v, want ErrInvalidArgument", err)
			}
			d16 := make([]uint16, len(tc.dst))
			err = k.ImageToTensorF16(d16, tc.src, tc.w, tc.h, tc.stride, tc.c, tc.outW, tc.outH, tc.scale, imagenetMean, tc.std)
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("ImageToTensorF16: got %v, want ErrInvalidArgument", err)
			}
		})
	}
}

func TestResizePlane(t *testing.T) {
	var k CPU
	r := newRand(5)
	sizes := [][4]int{
		{1, 1, 1, 1}, {1, 1, 4, 3}, {9, 7, 9, 7}, {64, 33, 64, 33},
		{10, 8, 25, 19}, {40, 30, 7, 5}, {5, 40, 30, 3}, {17, 1, 1, 17},
	}
	for range 20 {
		sizes = append(sizes, [4]int{1 + r.IntN(50), 1 + r.IntN(50), 1 + r.IntN(50), 1 + r.IntN(50)})
	}
	for _, s := range sizes {
		sw, sh, dw, dh := s[0], s[1], s[2], s[3]
		t.Run(fmt.Sprintf("%dx%d_to_%dx%d", sw, sh, dw, dh), func(t *testing.T) {
			src := randFloats(r, sw*sh, -3, 3)
			dst := make([]float32, dw*dh)
			nanFill(dst)
			if err := k.ResizePlane(dst, dw, dh, src, sw, sh); err != nil {
				t.Fatal(err)
			}
			if sw == dw && sh == dh {
				for i := range src {
					if dst[i] != src[i] {
						t.Fatalf("identity resize changed element %d: %v -> %v", i, src[i], dst[i])
					}
				}
				return
			}
			get := func(x, y int) float64 { return float64(src[y*sw+x]) }
			for y := range dh {
				for x := range dw {
					want := refBilinear(get, sw, sh, dw, dh, x, y)
					if d := math.Abs(float64(dst[y*dw+x]) - want); !(d <= 1e-5) {
						t.Fatalf("(%d,%d): got %v want %v", x, y, dst[y*dw+x], want)
					}
				}
			}
		})
	}
}

func TestResizePlaneIdentityKeepsInf(t *testing.T) {
	var k CPU
	src := []float32{1, float32(math.Inf(1)), -2, 3, float32(math.Inf(-1)), 0.5}
	dst := make([]float32, len(src))
	nanFill(dst)
	if err := k.ResizePlane(dst, 3, 2, src, 3, 2); err != nil {
		t.Fatal(err)
	}
	for i := range src {
		if dst[i] != src[i] {
			t.Fatalf("element %d: got %v want %v", i, dst[i], src[i])
		}
	}
}

func TestResizePlaneErrors(t *testing.T) {
	var k CPU
	src := randFloats(newRand(6), 12, 0.1, 1)
	tests := []struct {
		name   string
		dst    []float32
		dw, dh int
		src    []float32
		sw, sh int
	}{
		{"zero dst", make([]float32, 4), 0, 2, src, 4, 3},
		{"negative src", make([]float32, 4), 2, 2, src, -4, 3},
		{"short src", make([]float32, 4), 2, 2, src[:11], 4, 3},
		{"long dst", make([]float32, 5), 2, 2, src, 4, 3},
	}
	for _, tc := range tests {
		if err := k.ResizePlane(tc.dst, tc.dw, tc.dh, tc.src, tc.sw, tc.sh); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: got %v, want ErrInvalidArgument", tc.name, err)
		}
	}
}

func BenchmarkImageToTensor(b *testing.B) {
	var k CPU
	const w, h, c, ow, oh = 512, 512, 3, 1024, 1024
	src := randBytes(newRand(7), w*h*c)
	dst := make([]float32, 3*ow*oh)
	b.SetBytes(int64(len(dst) * 4))
	for b.Loop() {
		if err := k.ImageToTensor(dst, src, w, h, w*c, c, ow, oh, 255, imagenetMean, imagenetStd); err != nil {
			b.Fatal(err)
		}
	}
}
