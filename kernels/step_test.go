package kernels

import (
	"errors"
	"math"
	"testing"
)

// closeTo reports whether got is within a few float32 ulps (relative) of
// the float64 reference, with an absolute floor for results near zero
// (where cancellation makes relative error meaningless).
func closeTo(got float32, want, scale float64) bool {
	return math.Abs(float64(got)-want) <= 4e-7*math.Max(math.Abs(want), scale)
}

func TestGuidance(t *testing.T) {
	r := newRand(1)
	for _, tc := range []struct {
		name string
		n    int
		g    float32
	}{
		{"one", 1, 7.5},
		{"odd", 1001, 3},
		{"g=1 is cond", 333, 1},
		{"g=0 is uncond", 333, 0},
		{"parallel split", 1<<17 + 3, 5.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := randFloats(r, tc.n, -3, 3)
			c := randFloats(r, tc.n, -3, 3)
			dst := make([]float32, tc.n)
			nanFill(dst)
			if err := (CPU{}).Guidance(dst, u, c, tc.g); err != nil {
				t.Fatal(err)
			}
			for i := range dst {
				uu, cc, g := float64(u[i]), float64(c[i]), float64(tc.g)
				want := uu + g*(cc-uu)
				// Error bound: rounding of c-u, of the product and of the sum.
				if !closeTo(dst[i], want, math.Abs(uu)+math.Abs(g*(cc-uu))) {
					t.Fatalf("dst[%d]=%v, want %v (u=%v c=%v g=%v)", i, dst[i], want, u[i], c[i], tc.g)
				}
				switch tc.g {
				case 1:
					if dst[i] != c[i] && math.Abs(float64(dst[i]-c[i])) > 1e-6 {
						t.Fatalf("g=1: dst[%d]=%v, want cond %v", i, dst[i], c[i])
					}
				case 0:
					if dst[i] != u[i] {
						t.Fatalf("g=0: dst[%d]=%v, want uncond %v exactly", i, dst[i], u[i])
					}
				}
			}
		})
	}
}

// TestGuidanceExact uses dyadic values whose results are exact in float32,
// so any extra or missing rounding shows.
func TestGuidanceExact(t *testing.T) {
	u := []float32{1.5, -2.25, 0.125, 1024}
	c := []float32{3.25, 0.75, -0.375, 1020}
	want := []float32{1.5 + 7.5*1.75, -2.25 + 7.5*3, 0.125 + 7.5*-0.5, 1024 + 7.5*-4}
	dst := make([]float32, len(u))
	nanFill(dst)
	if err := (CPU{}).Guidance(dst, u, c, 7.5); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if dst[i] != want[i] {
			t.Errorf("dst[%d]=%v, want %v", i, dst[i], want[i])
		}
	}
	// In place: dst aliases cond.
	if err := (CPU{}).Guidance(c, u, c, 7.5); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if c[i] != want[i] {
			t.Errorf("in place: c[%d]=%v, want %v", i, c[i], want[i])
		}
	}
}

func TestAxpby(t *testing.T) {
	r := newRand(2)
	for _, tc := range []struct {
		name    string
		n       int
		a, b, c float32
		withZ   bool
	}{
		{"two terms", 777, 0.9, -0.3, 0, false},
		{"three terms", 777, 1.1, 0.25, -0.7, true},
		{"euler step", 4096, 1, -0.0421, 0, false},
		{"parallel split", 1<<17 + 5, 0.5, 0.5, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := randFloats(r, tc.n, -4, 4)
			y := randFloats(r, tc.n, -4, 4)
			var z []float32
			if tc.withZ {
				z = randFloats(r, tc.n, -4, 4)
			}
			dst := make([]float32, tc.n)
			nanFill(dst)
			if err := (CPU{}).Axpby(dst, x, tc.a, y, tc.b, z, tc.c); err != nil {
				t.Fatal(err)
			}
			for i := range dst {
				xa, yb := float64(x[i])*float64(tc.a), float64(y[i])*float64(tc.b)
				want, mag := xa+yb, math.Abs(xa)+math.Abs(yb)
				if z != nil {
					zc := float64(z[i]) * float64(tc.c)
					want += zc
					mag += math.Abs(zc)
				}
				if !closeTo(dst[i], want, mag) {
					t.Fatalf("dst[%d]=%v, want %v", i, dst[i], want)
				}
			}
		})
	}
}

func TestAxpbyExactAndInPlace(t *testing.T) {
	x := []float32{1, -2, 0.5, 3}
	y := []float32{4, 0.25, -8, 1}
	z := []float32{-1, 2, 0.125, 16}
	want := []float32{1*0.5 + 4*-2 + -1*4, -2*0.5 + 0.25*-2 + 2*4, 0.5*0.5 + -8*-2 + 0.125*4, 3*0.5 + 1*-2 + 16*4}
	// dst aliases x, as a sampler updating its latent in place would.
	if err := (CPU{}).Axpby(x, x, 0.5, y, -2, z, 4); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if x[i] != want[i] {
			t.Errorf("x[%d]=%v, want %v", i, x[i], want[i])
		}
	}
}

func TestStepErrors(t *testing.T) {
	s3, s4 := make([]float32, 3), make([]float32, 4)
	for name, err := range map[string]error{
		"guidance uncond": CPU{}.Guidance(s3, s4, s3, 1),
		"guidance cond":   CPU{}.Guidance(s3, s3, s4, 1),
		"axpby x":         CPU{}.Axpby(s3, s4, 1, s3, 1, nil, 0),
		"axpby y":         CPU{}.Axpby(s3, s3, 1, s4, 1, nil, 0),
		"axpby z":         CPU{}.Axpby(s3, s3, 1, s3, 1, s4, 1),
		"axpby empty z":   CPU{}.Axpby(s3, s3, 1, s3, 1, []float32{}, 1),
	} {
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
		}
	}
}
