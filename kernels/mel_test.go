package kernels

import (
	"errors"
	"math"
	"testing"
)

func TestPowerSpectrum(t *testing.T) {
	r := newRand(4)
	for _, n := range []int{1, 201, 201 * 3000} {
		spec := make([]complex64, n)
		for i := range spec {
			spec[i] = complex(2*r.Float32()-1, 2*r.Float32()-1)
		}
		spec[0] = complex(3, -4) // exact: 25
		dst := make([]float32, n)
		nanFill(dst)
		if err := (CPU{}).PowerSpectrum(dst, spec); err != nil {
			t.Fatal(err)
		}
		if dst[0] != 25 {
			t.Errorf("n=%d: |3-4i|^2 = %v, want 25", n, dst[0])
		}
		for i, v := range spec {
			re, im := float64(real(v)), float64(imag(v))
			want := re*re + im*im
			if !closeTo(dst[i], want, want) {
				t.Fatalf("n=%d: dst[%d]=%v, want %v", n, i, dst[i], want)
			}
		}
	}
}

// triangleFilters builds nMels overlapping triangles over nBins, like a
// mel filterbank: mostly zeros, a few positive taps per row.
func triangleFilters(nMels, nBins int) []float32 {
	f := make([]float32, nMels*nBins)
	step := float64(nBins-1) / float64(nMels+1)
	for m := range nMels {
		lo, mid, hi := float64(m)*step, float64(m+1)*step, float64(m+2)*step
		for k := range nBins {
			x := float64(k)
			var w float64
			switch {
			case x > lo && x <= mid:
				w = (x - lo) / (mid - lo)
			case x > mid && x < hi:
				w = (hi - x) / (hi - mid)
			}
			f[m*nBins+k] = float32(w)
		}
	}
	return f
}

func TestMelFilterbank(t *testing.T) {
	r := newRand(5)
	for _, tc := range []struct {
		name                  string
		nMels, nBins, nFrames int
		floor                 float32
	}{
		{"whisper shape", 80, 201, 300, 1e-10},
		{"one of each", 1, 1, 1, 1e-10},
		{"dense random", 7, 33, 19, 1e-3},
		{"more mels than workers", 128, 201, 50, 1e-10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var filters []float32
			if tc.nBins > 1 && tc.name != "dense random" {
				filters = triangleFilters(tc.nMels, tc.nBins)
			} else {
				filters = randFloats(r, tc.nMels*tc.nBins, 0.01, 1)
			}
			power := randFloats(r, tc.nFrames*tc.nBins, 0, 4)
			for i := range power { // a wide dynamic range, as real spectra
				power[i] *= float32(math.Pow(10, float64(r.IntN(12)-8)))
			}
			dst := make([]float32, tc.nMels*tc.nFrames)
			nanFill(dst)
			if err := (CPU{}).MelFilterbank(dst, filters, tc.nMels, tc.nBins, power, tc.nFrames, tc.floor); err != nil {
				t.Fatal(err)
			}
			for m := range tc.nMels {
				for f := range tc.nFrames {
					var s float64
					for k := range tc.nBins {
						s += float64(filters[m*tc.nBins+k]) * float64(power[f*tc.nBins+k])
					}
					want := math.Log10(math.Max(s, float64(tc.floor)))
					// Non-negative terms: float32 accumulation of n terms is
					// within n ulps relative, i.e. |Δlog10| <= n*6e-8/ln10.
					tol := float64(tc.nBins)*6e-8/math.Ln10 + 1e-6
					if got := dst[m*tc.nFrames+f]; !(math.Abs(float64(got)-want) <= tol) {
						t.Fatalf("mel %d frame %d = %v, want %v", m, f, got, want)
					}
				}
			}
		})
	}
}

// TestMelFilterbankExact covers the clamp, the zero-tap skip and an exact
// small product.
func TestMelFilterbankExact(t *testing.T) {
	inf := float32(math.Inf(1))
	filters := []float32{
		0, 0, 0, // empty filter: always floor
		0.5, 0.25, 0, // ignores bin 2
		0, 0, 1, // only bin 2
	}
	power := []float32{
		4, 16, inf, // frame 0: Inf only under the third filter
		8, 32, 1000, // frame 1
	}
	floor := float32(1e-10)
	dst := make([]float32, 3*2)
	nanFill(dst)
	if err := (CPU{}).MelFilterbank(dst, filters, 3, 3, power, 2, floor); err != nil {
		t.Fatal(err)
	}
	lf := float32(math.Log10(float64(floor)))
	want := []float32{lf, lf, float32(math.Log10(6)), float32(math.Log10(12)), inf, 3}
	for i := range want {
		if dst[i] != want[i] {
			t.Errorf("dst[%d]=%v, want %v", i, dst[i], want[i])
		}
	}
	// A NaN sum clamps to floor rather than propagating.
	power[2] = float32(math.NaN())
	nanFill(dst)
	if err := (CPU{}).MelFilterbank(dst, filters, 3, 3, power, 2, floor); err != nil {
		t.Fatal(err)
	}
	if dst[4] != lf || dst[2] != float32(math.Log10(6)) {
		t.Errorf("NaN power: dst[4]=%v (want floor %v), dst[2]=%v", dst[4], lf, dst[2])
	}
}

func TestMelErrors(t *testing.T) {
	f, p, d := make([]float32, 6), make([]float32, 12), make([]float32, 8)
	for name, err := range map[string]error{
		"spectrum len": CPU{}.PowerSpectrum(make([]float32, 2), make([]complex64, 3)),
		"filters len":  CPU{}.MelFilterbank(d, f, 2, 4, p, 4, 1e-10),
		"power len":    CPU{}.MelFilterbank(d, f, 2, 3, p, 3, 1e-10),
		"dst len":      CPU{}.MelFilterbank(d[:7], f, 2, 3, p, 4, 1e-10),
		"zero floor":   CPU{}.MelFilterbank(d, f, 2, 3, p, 4, 0),
		"NaN floor":    CPU{}.MelFilterbank(d, f, 2, 3, p, 4, float32(math.NaN())),
		"Inf floor":    CPU{}.MelFilterbank(d, f, 2, 3, p, 4, float32(math.Inf(1))),
		"zero mels":    CPU{}.MelFilterbank(d[:0], f[:0], 0, 3, p, 4, 1e-10),
	} {
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
		}
	}
	// Well-formed sizes pass, so the cases above fail for their stated reason.
	if err := (CPU{}).MelFilterbank(d, f, 2, 3, p, 4, 1e-10); err != nil {
		t.Errorf("valid call: %v", err)
	}
}
