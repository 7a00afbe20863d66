package kernels

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"testing"
)

// naiveBox is the O(r²) clipped-window mean, in float64.
func naiveBox(src []float32, w, h, r int) []float64 {
	out := make([]float64, w*h)
	for y := range h {
		for x := range w {
			var s float64
			var n int
			for yy := max(y-r, 0); yy <= min(y+r, h-1); yy++ {
				for xx := max(x-r, 0); xx <= min(x+r, w-1); xx++ {
					s += float64(src[yy*w+xx])
					n++
				}
			}
			out[y*w+x] = s / float64(n)
		}
	}
	return out
}

func TestBoxBlurMatchesNaive(t *testing.T) {
	r := newRand(12)
	tests := []struct{ w, h, r int }{
		{1, 1, 0}, {1, 1, 3}, {7, 3, 1}, {3, 7, 2}, {17, 9, 5},
		{40, 31, 4}, {31, 40, 50}, {300, 5, 7}, {5, 300, 90}, {600, 3, 2},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%dx%d_r%d", tc.w, tc.h, tc.r), func(t *testing.T) {
			src := randFloats(r, tc.w*tc.h, 0, 1)
			want := naiveBox(src, tc.w, tc.h, tc.r)
			dst := make([]float32, len(src))
			nanFill(dst)
			tmp := make([]float32, len(src))
			boxBlur(dst, src, tmp, tc.w, tc.h, tc.r)
			for i := range want {
				if d := math.Abs(float64(dst[i]) - want[i]); !(d <= 1e-6) {
					t.Fatalf("element %d: got %v want %v", i, dst[i], want[i])
				}
			}
			// In place must give the same bits.
			boxBlur(src, src, tmp, tc.w, tc.h, tc.r)
			for i := range src {
				if src[i] != dst[i] {
					t.Fatalf("in-place element %d: %v vs %v", i, src[i], dst[i])
				}
			}
		})
	}
}

func TestForegroundAlphaOneIsImage(t *testing.T) {
	var k CPU
	r := newRand(13)
	for _, s := range [][2]int{{1, 1}, {5, 3}, {64, 48}, {200, 190}} {
		w, h := s[0], s[1]
		img := randFloats(r, 3*w*h, 0, 1)
		alpha := make([]float32, w*h)
		for i := range alpha {
			alpha[i] = 1
		}
		dst := make([]float32, 3*w*h)
		nanFill(dst)
		if err := k.ForegroundEstimate(dst, img, alpha, w, h); err != nil {
			t.Fatal(err)
		}
		for i := range img {
			if d := math.Abs(float64(dst[i] - img[i])); !(d <= 1e-6) {
				t.Fatalf("%dx%d element %d: got %v want %v", w, h, i, dst[i], img[i])
			}
		}
	}
}

// synthComposite builds a known foreground F over a known background B
// with a soft, curved alpha edge, and the composite I = a*F + (1-a)*B.
func synthComposite(w, h int) (img, alpha, fg []float32) {
	n := w * h
	img, alpha, fg = make([]float32, 3*n), make([]float32, n), make([]float32, 3*n)
	for y := range h {
		for x := range w {
			i := y*w + x
			fx, fy := float64(x)/float64(w), float64(y)/float64(h)
			// Soft edge about 12 px wide along a wavy vertical line.
			edge := 0.5*float64(w) + 0.1*float64(w)*math.Sin(6*fy)
			a := min(max((edge-float64(x))/12+0.5, 0), 1)
			alpha[i] = float32(a)
			f := [3]float64{0.85 + 0.1*fy, 0.3 + 0.2*fx, 0.15 + 0.1*math.Sin(4*fy)}
			b := [3]float64{0.1 + 0.1*fx, 0.75 - 0.2*fy, 0.9 - 0.1*fx}
			for k := range 3 {
				fg[k*n+i] = float32(f[k])
				img[k*n+i] = float32(a*f[k] + (1-a)*b[k])
			}
		}
	}
	return img, alpha, fg
}

func TestForegroundSyntheticComposite(t *testing.T) {
	var k CPU
	const w, h = 160, 120
	n := w * h
	img, alpha, fg := synthComposite(w, h)
	dst := make([]float32, 3*n)
	nanFill(dst)
	if err := k.ForegroundEstimate(dst, img, alpha, w, h); err != nil {
		t.Fatal(err)
	}
	var errEst, errImg float64
	var cnt int
	for i, a := range alpha {
		// Where alpha is tiny the foreground is unobservable; judge the
		// blended band where it matters.
		if a < 0.1 || a > 0.95 {
			continue
		}
		for c := range 3 {
			errEst += math.Abs(float64(dst[c*n+i] - fg[c*n+i]))
			errImg += math.Abs(float64(img[c*n+i] - fg[c*n+i]))
		}
		cnt++
	}
	if cnt == 0 {
		t.Fatal("no blended pixels")
	}
	errEst /= float64(3 * cnt)
	errImg /= float64(3 * cnt)
	t.Logf("mean abs error over %d blended pixels: estimate %.4f, image %.4f", cnt, errEst, errImg)
	if !(errEst < 0.5*errImg) {
		t.Fatalf("estimate error %.4f not clearly below image error %.4f", errEst, errImg)
	}
	for i, v := range dst {
		if !(v >= 0 && v <= 1) {
			t.Fatalf("element %d = %v outside [0,1]", i, v)
		}
	}
}

func TestForegroundDeterministic(t *testing.T) {
	var k CPU
	const w, h = 300, 211
	img, alpha, _ := synthComposite(w, h)
	run := func(procs int) []float32 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		dst := make([]float32, 3*w*h)
		if err := k.ForegroundEstimate(dst, img, alpha, w, h); err != nil {
			t.Fatal(err)
		}
		return dst
	}
	a, b := run(1), run(5)
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("element %d differs: %v vs %v", i, a[i], b[i])
		}
	}
}

func TestForegroundErrors(t *testing.T) {
	var k CPU
	img := randFloats(newRand(14), 3*4*3, 0, 1)
	alpha := randFloats(newRand(15), 4*3, 0, 1)
	tests := []struct {
		name            string
		dst, img, alpha []float32
		w, h            int
	}{
		{"zero width", make([]float32, 36), img, alpha, 0, 3},
		{"short dst", make([]float32, 35), img, alpha, 4, 3},
		{"short img", make([]float32, 36), img[:35], alpha, 4, 3},
		{"short alpha", make([]float32, 36), img, alpha[:11], 4, 3},
	}
	for _, tc := range tests {
		if err := k.ForegroundEstimate(tc.dst, tc.img, tc.alpha, tc.w, tc.h); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: got %v, want ErrInvalidArgument", tc.name, err)
		}
	}
}

func BenchmarkForegroundEstimate(b *testing.B) {
	var k CPU
	const w, h = 1024, 1024
	img, alpha, _ := synthComposite(w, h)
	dst := make([]float32, 3*w*h)
	for b.Loop() {
		if err := k.ForegroundEstimate(dst, img, alpha, w, h); err != nil {
			b.Fatal(err)
		}
	}
}
