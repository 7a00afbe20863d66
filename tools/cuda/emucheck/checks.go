package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"

	"github.com/falocal/falocal/kernels"
)

type checker struct {
	r      *runner
	rng    *rand.Rand
	cpu    kernels.CPU
	failed int
}

func (c *checker) errorf(format string, a ...any) {
	c.failed++
	fmt.Fprintf(os.Stderr, "FAIL "+format+"\n", a...)
}

func (c *checker) must(what string, err error) bool {
	if err != nil {
		c.errorf("%s: %v", what, err)
		return false
	}
	return true
}

func (c *checker) floats(n int, lo, hi float32) []float32 {
	f := make([]float32, n)
	for i := range f {
		f[i] = lo + (hi-lo)*c.rng.Float32()
	}
	return f
}

func nanFilled(n int) []float32 {
	f := make([]float32, n)
	for i := range f {
		f[i] = float32(math.NaN())
	}
	return f
}

// same compares bit patterns, so NaN == NaN but -0 != +0.
func same[T float32 | uint16 | uint8](c *checker, what string, got, want []T) {
	for i := range want {
		if !eqBits(got[i], want[i]) {
			c.errorf("%s: [%d] = %v, CPU reference %v", what, i, got[i], want[i])
			return
		}
	}
}

func eqBits[T float32 | uint16 | uint8](a, b T) bool {
	if x, ok := any(a).(float32); ok {
		y := any(b).(float32)
		return math.Float32bits(x) == math.Float32bits(y) || (x != x && y != y)
	}
	return a == b
}

func (c *checker) image() {
	type tc struct{ w, h, pad, ch, ow, oh int }
	// Odd and even output widths: a lone last pixel per row, paired stores.
	for _, t := range []tc{{37, 23, 0, 3, 64, 48}, {64, 48, 5, 4, 17, 13}, {9, 9, 3, 1, 31, 20}, {1, 1, 0, 3, 4, 4},
		{300, 200, 1, 3, 224, 224}, {5, 7, 0, 3, 1, 3}, {40, 30, 2, 1, 18, 9}, {50, 40, 0, 4, 33, 21}} {
		stride := t.w*t.ch + t.pad
		src := make([]uint8, (t.h-1)*stride+t.w*t.ch) // last row unpadded
		for i := range src {
			src[i] = uint8(c.rng.IntN(256))
		}
		scale := float32(255)
		mean := [3]float32{0.485, 0.456, 0.406}
		std := [3]float32{0.229, 0.224, 0.225}
		n := 3 * t.ow * t.oh
		what := fmt.Sprintf("image_to_tensor %dx%dx%d->%dx%d", t.w, t.h, t.ch, t.ow, t.oh)
		want := make([]float32, n)
		if !c.must(what, c.cpu.ImageToTensor(want, src, t.w, t.h, stride, t.ch, t.ow, t.oh, scale, mean, std)) {
			continue
		}
		want16 := make([]uint16, n)
		c.must(what, c.cpu.ImageToTensorF16(want16, src, t.w, t.h, stride, t.ch, t.ow, t.oh, scale, mean, std))
		pw := (t.ow + 1) / 2 // image_to_tensor walks pairs of adjacent pixels
		for _, threads := range strideCounts(pw*t.oh, pw) {
			what := fmt.Sprintf("%s, %d threads", what, threads)
			got := nanFilled(n)
			if c.must(what, c.r.launch("image_to_tensor", threads, bytesOf(got), bytesOf(src), t.w, t.h, stride, t.ch, t.ow, t.oh,
				scale, mean[0], mean[1], mean[2], std[0], std[1], std[2])) {
				same(c, what, got, want)
			}
			got16 := make([]uint16, n)
			for i := range got16 {
				got16[i] = 0x7e01 // a NaN the kernel never writes
			}
			if c.must(what+" f16", c.r.launch("image_to_tensor_f16", threads, bytesOf(got16), bytesOf(src), t.w, t.h, stride, t.ch, t.ow, t.oh,
				scale, mean[0], mean[1], mean[2], std[0], std[1], std[2])) {
				same(c, what+" f16", got16, want16)
			}
		}
	}
}

// strideCounts are the thread counts a grid-stride kernel over n pixels,
// w a row, is checked with: one per pixel (what kernels/cuda launches for
// small images), a whole number of rows (what it launches for large ones:
// each thread keeps its column), and counts that are not, down to a single
// block, so threads walk many pixels across row ends.
func strideCounts(n, w int) []int {
	var counts []int
	for _, k := range []int{n, 3 * w, (n + 15) / 16, 300, 1} {
		if k <= n && !slices.Contains(counts, k) {
			counts = append(counts, k)
		}
	}
	return counts
}

func (c *checker) resize() {
	for _, t := range [][4]int{{7, 5, 23, 17}, {40, 30, 9, 11}, {16, 16, 16, 16}, {1, 1, 3, 2}, {1024, 1024, 333, 517}} {
		sw, sh, dw, dh := t[0], t[1], t[2], t[3]
		src := c.floats(sw*sh, -2, 3)
		src[0] = float32(math.Inf(1)) // exact-copy paths must not make NaN
		what := fmt.Sprintf("resize_plane %dx%d->%dx%d", sw, sh, dw, dh)
		want := make([]float32, dw*dh)
		c.must(what, c.cpu.ResizePlane(want, dw, dh, src, sw, sh))
		src2 := append([]float32(nil), src...)
		src2[len(src2)-1] = float32(math.NaN())
		lo, hi := float32(-0.5), float32(2.5)
		wantMask := make([]float32, dw*dh)
		c.must(what, c.cpu.ResizeMask(wantMask, dw, dh, src2, sw, sh, lo, hi))
		for _, threads := range strideCounts(dw*dh, dw) {
			what := fmt.Sprintf("%s, %d threads", what, threads)
			got := nanFilled(dw * dh)
			if c.must(what, c.r.launch("resize_plane", threads, bytesOf(got), dw, dh, bytesOf(src), sw, sh)) {
				same(c, what, got, want)
			}
			got = nanFilled(dw * dh)
			if c.must("resize_mask", c.r.launch("resize_mask", threads, bytesOf(got), dw, dh, bytesOf(src2), sw, sh, lo, hi)) {
				same(c, "resize_mask "+what, got, wantMask)
			}
		}
	}
}

func (c *checker) compose() {
	// w*h = 91 (groups of 4 across row ends, a tail of 3), 2112, 1, 6.
	for _, t := range [][3]int{{13, 7, 1}, {13, 7, 3}, {64, 33, 4}, {1, 1, 4}, {3, 2, 3}} {
		w, h, ch := t[0], t[1], t[2]
		stride := w*ch + 2
		src := make([]uint8, (h-1)*stride+w*ch)
		for i := range src {
			src[i] = uint8(c.rng.IntN(256))
		}
		mask := c.floats(w*h, -0.2, 1.2)
		mask[0] = float32(math.NaN())
		what := fmt.Sprintf("compose_alpha %dx%dx%d", w, h, ch)
		want := make([]uint8, 4*w*h)
		c.must(what, c.cpu.ComposeAlpha(want, src, w, h, stride, ch, mask))
		got := make([]uint8, 4*w*h)
		for i := range got {
			got[i] = uint8(i*7 + 1)
		}
		if c.must(what, c.r.launch("compose_alpha", (w*h+3)/4, bytesOf(got), bytesOf(src), w, h, stride, ch, bytesOf(mask))) {
			same(c, what, got, want)
		}
	}
}

func (c *checker) blend() {
	const ch, H, W, tile, ov = 3, 50, 70, 32, 8
	accW, wsW := make([]float32, ch*H*W), make([]float32, H*W)
	accG, wsG := make([]float32, ch*H*W), make([]float32, H*W)
	for y0 := 0; y0 < H; y0 += tile - ov {
		for x0 := 0; x0 < W; x0 += tile - ov {
			th, tw := min(tile, H-y0), min(tile, W-x0)
			t := c.floats(ch*th*tw, -1, 2)
			what := fmt.Sprintf("blend_tile at (%d,%d)", x0, y0)
			c.must(what, c.cpu.BlendTile(accW, wsW, ch, H, W, t, th, tw, x0, y0, ov))
			if c.must(what, c.r.launch("blend_tile", th*tw, bytesOf(accG), bytesOf(wsG), ch, H, W, bytesOf(t), th, tw, x0, y0, ov)) {
				same(c, what+" acc", accG, accW)
				same(c, what+" wsum", wsG, wsW)
			}
		}
	}
	wsW[5], wsG[5] = 0, 0 // an uncovered pixel
	c.must("normalize_blend", c.cpu.NormalizeBlend(accW, wsW, ch))
	if c.must("normalize_blend", c.r.launch("normalize_blend", H*W, bytesOf(accG), bytesOf(wsG), ch, H*W)) {
		same(c, "normalize_blend", accG, accW)
	}
}

// convertThreads is kernels/cuda's thread count for convert.cu: 8 elements
// a thread.
func convertThreads(n int) int { return (n + 7) / 8 }

func (c *checker) convert() {
	// Every binary16 pattern one way; NaNs compare by NaN-ness only.
	h := make([]uint16, 1<<16)
	for i := range h {
		h[i] = uint16(i)
	}
	c.f16ToF32(h)
	// float32 across the half range, subnormals, ties and overflow.
	var f []float32
	for e := -30; e <= 17; e++ {
		for range 200 {
			v := float32(math.Ldexp(1+c.rng.Float64(), e))
			if c.rng.IntN(2) == 0 {
				v = -v
			}
			f = append(f, v)
		}
	}
	for _, bits := range []uint32{0x33000000, 0x33000001, 0x387fc000, 0x3f801000, 0x3f803000, 0x477fefff, 0x477ff000, 0x7f800000, 0xff800000, 0, 0x80000000} {
		f = append(f, math.Float32frombits(bits))
	}
	c.f32ToF16(f) // 9611 elements: 1201 vector groups and a tail of 3
	// Short lengths: tail only, one group, one group and a tail. The
	// buffers are exact-size copies, so a vector access past n trips ASan.
	for _, n := range []int{1, 3, 7, 8, 9, 15, 16, 17} {
		c.f16ToF32(append([]uint16(nil), h[15360:15360+n]...)) // around 1.0
		c.f32ToF16(append([]float32(nil), f[len(f)-n:]...))
	}
}

func (c *checker) f16ToF32(h []uint16) {
	what := fmt.Sprintf("f16_to_f32 n=%d", len(h))
	want := make([]float32, len(h))
	c.must(what, c.cpu.F16ToF32(want, h))
	got := nanFilled(len(h))
	if c.must(what, c.r.launch("f16_to_f32", convertThreads(len(h)), bytesOf(got), bytesOf(h), len(h))) {
		same(c, what, got, want)
	}
}

func (c *checker) f32ToF16(f []float32) {
	what := fmt.Sprintf("f32_to_f16 n=%d", len(f))
	want := make([]uint16, len(f))
	c.must(what, c.cpu.F32ToF16(want, f))
	got := make([]uint16, len(f))
	for i := range got {
		got[i] = 0x7e01 // a NaN the kernel never writes
	}
	if c.must(what, c.r.launch("f32_to_f16", convertThreads(len(f)), bytesOf(got), bytesOf(f), len(f))) {
		same(c, what, got, want)
	}
}

func (c *checker) step() {
	for _, n := range []int{1, 255, 256, 1000} {
		u, cond := c.floats(n, -3, 3), c.floats(n, -3, 3)
		want := make([]float32, n)
		c.must("cfg_guidance", c.cpu.Guidance(want, u, cond, 7.5))
		got := nanFilled(n)
		if c.must("cfg_guidance", c.r.launch("cfg_guidance", n, bytesOf(got), bytesOf(u), bytesOf(cond), float32(7.5), n)) {
			same(c, "cfg_guidance", got, want)
		}
		x, y, z := c.floats(n, -4, 4), c.floats(n, -4, 4), c.floats(n, -4, 4)
		c.must("axpby", c.cpu.Axpby(want, x, 0.93, y, -0.071, nil, 0))
		got = nanFilled(n)
		if c.must("axpby", c.r.launch("axpby", n, bytesOf(got), bytesOf(x), float32(0.93), bytesOf(y), float32(-0.071), (*buf)(nil), float32(0), n)) {
			same(c, "axpby two terms", got, want)
		}
		c.must("axpby", c.cpu.Axpby(want, x, 0.93, y, -0.071, z, 1.7))
		got = nanFilled(n)
		if c.must("axpby", c.r.launch("axpby", n, bytesOf(got), bytesOf(x), float32(0.93), bytesOf(y), float32(-0.071), bytesOf(z), float32(1.7), n)) {
			same(c, "axpby three terms", got, want)
		}
	}
}

func (c *checker) mel() {
	const nMels, nBins, nFrames = 80, 201, 300
	spec := make([]complex64, nFrames*nBins)
	for i := range spec {
		spec[i] = complex(c.rng.Float32()*2-1, c.rng.Float32()*2-1)
	}
	power := make([]float32, len(spec))
	c.must("power_spectrum", c.cpu.PowerSpectrum(power, spec))
	got := nanFilled(len(spec))
	if c.must("power_spectrum", c.r.launch("power_spectrum", len(spec), bytesOf(got), bytesOf(spec), len(spec))) {
		same(c, "power_spectrum", got, power)
	}
	filters := make([]float32, nMels*nBins)
	for m := range nMels { // sparse rows, like a mel filterbank
		for k := m * 2; k < min(m*2+7, nBins); k++ {
			filters[m*nBins+k] = c.rng.Float32()
		}
	}
	filters[nBins-1] = 0.5 // and one tap far from the others
	want := make([]float32, nMels*nFrames)
	c.must("mel_filterbank", c.cpu.MelFilterbank(want, filters, nMels, nBins, power, nFrames, 1e-10))
	got = nanFilled(nMels * nFrames)
	if !c.must("mel_filterbank", c.r.launch("mel_filterbank", nMels*nFrames, bytesOf(got), bytesOf(filters), nMels, nBins, bytesOf(power), nFrames, float32(1e-10))) {
		return
	}
	// The sums match bit for bit; log10f and Go's Log10 may differ by an ulp.
	for i := range want {
		if !(math.Abs(float64(got[i]-want[i])) <= 2e-7*math.Max(1, math.Abs(float64(want[i])))) {
			c.errorf("mel_filterbank [%d] = %v, CPU reference %v", i, got[i], want[i])
			return
		}
	}
}
