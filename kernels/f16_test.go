package kernels

import (
	"errors"
	"math"
	"sort"
	"testing"
)

func TestF32ToF16KnownBits(t *testing.T) {
	p2 := func(e int) float32 { return float32(math.Ldexp(1, e)) }
	nan := float32(math.NaN())
	tests := []struct {
		name string
		in   float32
		want uint16
	}{
		{"zero", 0, 0x0000},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"one", 1, 0x3c00},
		{"minus two", -2, 0xc000},
		{"0.1", 0.1, 0x2e66},
		{"max finite", 65504, 0x7bff},
		{"just below max tie", 65519, 0x7bff},
		{"max tie rounds to even = inf", 65520, 0x7c00},
		{"overflow", 1e6, 0x7c00},
		{"negative overflow", -1e6, 0xfc00},
		{"+inf", float32(math.Inf(1)), 0x7c00},
		{"-inf", float32(math.Inf(-1)), 0xfc00},
		{"smallest normal 6.1035e-5", p2(-14), 0x0400},
		{"largest subnormal", 1023 * p2(-24), 0x03ff},
		{"tie between largest subnormal and smallest normal", p2(-14) - p2(-25), 0x0400},
		{"smallest subnormal", p2(-24), 0x0001},
		{"negative smallest subnormal", -p2(-24), 0x8001},
		{"half smallest subnormal ties to zero", p2(-25), 0x0000},
		{"just above half smallest subnormal", math.Nextafter32(p2(-25), 1), 0x0001},
		{"1.5 subnormal ulps ties to even 2", 3 * p2(-25), 0x0002},
		{"2.5 subnormal ulps ties to even 2", 5 * p2(-25), 0x0002},
		{"underflow", 1e-8, 0x0000},
		{"negative underflow keeps sign", -1e-8, 0x8000},
		{"1+half ulp ties to even 1", 1 + p2(-11), 0x3c00},
		{"1+1.5 ulp ties to even", 1 + 3*p2(-11), 0x3c02},
		{"just above 1+half ulp", math.Nextafter32(1+p2(-11), 2), 0x3c01},
		{"rounding carries into exponent", 2 - p2(-12), 0x4000},
		{"f32 subnormal", math.Float32frombits(1), 0x0000},
		{"nan", nan, 0x7e00},
	}
	for _, tc := range tests {
		got := f32ToF16(tc.in)
		if tc.in != tc.in { // NaN: any quiet-or-not NaN pattern is acceptable
			if got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
				t.Errorf("%s: got %#04x, not a NaN", tc.name, got)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("%s: f32ToF16(%g) = %#04x, want %#04x", tc.name, tc.in, got, tc.want)
		}
	}
	// A NaN whose payload lies only in bits dropped by the conversion must
	// not turn into Inf.
	if got := f32ToF16(math.Float32frombits(0x7f800001)); got&0x3ff == 0 {
		t.Errorf("low-payload NaN became %#04x", got)
	}
}

func TestF16ToF32KnownBits(t *testing.T) {
	tests := []struct {
		in   uint16
		want float32
	}{
		{0x0000, 0},
		{0x3c00, 1},
		{0xc000, -2},
		{0x7bff, 65504},
		{0x0400, float32(math.Ldexp(1, -14))},
		{0x0001, float32(math.Ldexp(1, -24))},
		{0x03ff, float32(math.Ldexp(1023, -24))},
		{0x7c00, float32(math.Inf(1))},
		{0xfc00, float32(math.Inf(-1))},
	}
	for _, tc := range tests {
		if got := f16ToF32(tc.in); got != tc.want {
			t.Errorf("f16ToF32(%#04x) = %g, want %g", tc.in, got, tc.want)
		}
	}
	if got := f16ToF32(0x8000); got != 0 || !math.Signbit(float64(got)) {
		t.Errorf("f16ToF32(0x8000) = %g, want -0", got)
	}
	for _, h := range []uint16{0x7e00, 0x7c01, 0xfe00, 0x7fff} {
		if got := f16ToF32(h); got == got {
			t.Errorf("f16ToF32(%#04x) = %g, want NaN", h, got)
		}
	}
}

func TestF16RoundTripAll(t *testing.T) {
	var k CPU
	src := make([]uint16, 1<<16)
	for i := range src {
		src[i] = uint16(i)
	}
	f := make([]float32, len(src))
	nanFill(f)
	if err := k.F16ToF32(f, src); err != nil {
		t.Fatal(err)
	}
	back := make([]uint16, len(src))
	if err := k.F32ToF16(back, f); err != nil {
		t.Fatal(err)
	}
	for i := range src {
		if back[i] != src[i] {
			t.Fatalf("%#04x -> %g -> %#04x", src[i], f[i], back[i])
		}
	}
}

// TestF32ToF16NearestEven checks random float32 values against a brute
// reference: the nearest finite half found by search over all of them,
// ties going to the even bit pattern.
func TestF32ToF16NearestEven(t *testing.T) {
	// All non-negative finite halves in increasing order of value.
	var pos []uint16
	for h := uint16(0); h < 0x7c00; h++ {
		pos = append(pos, h)
	}
	maxHalf := float64(f16ToF32(0x7bff))
	ref := func(f float32) uint16 {
		v := math.Abs(float64(f))
		var sign uint16
		if math.Signbit(float64(f)) {
			sign = 0x8000
		}
		// Beyond max+half ulp (65520) rounds to Inf.
		if v >= maxHalf+16 {
			return sign | 0x7c00
		}
		i := sort.Search(len(pos), func(i int) bool { return float64(f16ToF32(pos[i])) >= v })
		if i == len(pos) {
			return sign | pos[len(pos)-1]
		}
		best := pos[i]
		if i > 0 {
			lo := pos[i-1]
			dl := v - float64(f16ToF32(lo))
			dh := float64(f16ToF32(best)) - v
			if dl < dh || (dl == dh && lo&1 == 0) {
				best = lo
			}
		}
		return sign | best
	}
	r := newRand(8)
	src := make([]float32, 0, 200000)
	for range 100000 {
		// Uniform bit patterns cover every exponent; the scaled ones
		// concentrate on the half range where rounding matters.
		b := math.Float32frombits(r.Uint32())
		if b == b && !math.IsInf(float64(b), 0) {
			src = append(src, b)
		}
		src = append(src, float32(math.Ldexp(r.Float64()*2-1, r.IntN(44)-28)))
	}
	dst := make([]uint16, len(src))
	var k CPU
	if err := k.F32ToF16(dst, src); err != nil {
		t.Fatal(err)
	}
	for i, f := range src {
		if want := ref(f); dst[i] != want {
			t.Fatalf("F32ToF16(%g bits %#08x) = %#04x, want %#04x", f, math.Float32bits(f), dst[i], want)
		}
	}
}

func TestF16LengthErrors(t *testing.T) {
	var k CPU
	if err := k.F32ToF16(make([]uint16, 2), []float32{1, 2, 3}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("F32ToF16: got %v", err)
	}
	if err := k.F16ToF32(make([]float32, 4), []uint16{1, 2, 3}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("F16ToF32: got %v", err)
	}
	// Empty slices are a valid no-op.
	if err := k.F32ToF16(nil, nil); err != nil {
		t.Errorf("empty F32ToF16: %v", err)
	}
}
