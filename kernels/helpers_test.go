package kernels

import (
	"math"
	"math/rand/v2"
)

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)) }

// nanFill marks every element so a test can detect ones a call never wrote.
func nanFill(s []float32) {
	for i := range s {
		s[i] = float32(math.NaN())
	}
}

// randBytes returns random bytes; the first is forced non-zero so the data
// is never all zero.
func randBytes(r *rand.Rand, n int) []uint8 {
	b := make([]uint8, n)
	for i := range b {
		b[i] = uint8(r.IntN(256))
	}
	if n > 0 && b[0] == 0 {
		b[0] = 1
	}
	return b
}

// randFloats returns values uniform in [lo, hi).
func randFloats(r *rand.Rand, n int, lo, hi float32) []float32 {
	f := make([]float32, n)
	for i := range f {
		f[i] = lo + (hi-lo)*r.Float32()
	}
	return f
}

// refSample is the obviously-correct bilinear rule for one output
// coordinate: half-pixel centre mapping, neighbours clamped to the edge.
func refSample(out, in, outN int) (i0, i1 int, t float64) {
	f := (float64(out)+0.5)*float64(in)/float64(outN) - 0.5
	fl := math.Floor(f)
	t = f - fl
	clamp := func(i int) int { return min(max(i, 0), in-1) }
	return clamp(int(fl)), clamp(int(fl) + 1), t
}

// refBilinear interpolates get(x, y) at output pixel (ox, oy) in float64.
func refBilinear(get func(x, y int) float64, w, h, outW, outH, ox, oy int) float64 {
	x0, x1, tx := refSample(ox, w, outW)
	y0, y1, ty := refSample(oy, h, outH)
	top := get(x0, y0)*(1-tx) + get(x1, y0)*tx
	bot := get(x0, y1)*(1-tx) + get(x1, y1)*tx
	return top*(1-ty) + bot*ty
}
