//go:build cuda

// Device tests: they need a GPU and driver (the binary exits at start-up
// otherwise, from gorgonia.org/cu's init). Every device result is compared
// with kernels.CPU on fresh random inputs, with host and device outputs
// poisoned before each run so an unwritten element cannot pass.
package cuda

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/falocal/falocal/kernels"
)

var (
	dev *Device
	cpu kernels.CPU
)

func TestMain(m *testing.M) {
	d, err := New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kernels/cuda: no device:", err)
		os.Exit(1)
	}
	d.poison = true
	dev = d
	code := m.Run()
	if err := d.Close(); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "Close:", err)
		code = 1
	}
	os.Exit(code)
}

// newRand logs its seed so a failure can be replayed.
func newRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, 0x5851f42d4c957f2d))
}

// nonZero returns n values with magnitude in [0.05, hi), random sign.
func nonZero(r *rand.Rand, n int, hi float32) []float32 {
	s := make([]float32, n)
	for i := range s {
		v := 0.05 + r.Float32()*(hi-0.05)
		if r.IntN(2) == 0 {
			v = -v
		}
		s[i] = v
	}
	return s
}

func unit(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = 0.01 + 0.98*r.Float32()
	}
	return s
}

func bytesRand(r *rand.Rand, n int) []uint8 {
	s := make([]uint8, n)
	for i := range s {
		s[i] = uint8(1 + r.IntN(255))
	}
	return s
}

func poisonF32(n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(math.NaN())
	}
	return s
}

func poisonU16(n int) []uint16 {
	s := make([]uint16, n)
	for i := range s {
		s[i] = 0x7fff // binary16 NaN
	}
	return s
}

func poisonU8(n int) []uint8 {
	s := make([]uint8, n)
	for i := range s {
		s[i] = 0xa5
	}
	return s
}

// relErr is ‖out−ref‖/‖ref‖; NaN anywhere makes it NaN, which fails the
// callers' "< tol" check.
func relErr(out, ref []float32) float64 {
	var num, den float64
	for i := range ref {
		d := float64(out[i]) - float64(ref[i])
		num += d * d
		den += float64(ref[i]) * float64(ref[i])
	}
	if len(out) != len(ref) {
		return math.Inf(1)
	}
	return math.Sqrt(num) / math.Sqrt(den)
}

func f16s(t *testing.T, h []uint16) []float32 {
	t.Helper()
	f := make([]float32, len(h))
	if err := cpu.F16ToF32(f, h); err != nil {
		t.Fatal(err)
	}
	return f
}

func onDevice(t *testing.T, name string) {
	t.Helper()
	if !dev.HasKernel(name) {
		t.Logf("%s: no device kernel; comparing the CPU fallback", name)
	}
}

const (
	tol32 = 1e-5
	tol16 = 1e-3
)

func TestModuleHasKernels(t *testing.T) {
	var missing []string
	for _, n := range kernelNames {
		if !dev.HasKernel(n) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		t.Errorf("PTX lacks kernels %v", missing)
	}
	for _, e := range kernels.Entries() {
		if !slices.Contains(kernelNames, e.Name) {
			t.Errorf("PTX entry %s.%s is never launched", e.Module, e.Name)
		}
	}
}

func TestMemInfo(t *testing.T) {
	free, total, err := dev.MemInfo()
	if err != nil {
		t.Fatal(err)
	}
	name, _ := dev.Name()
	t.Logf("%s: %d MiB free of %d MiB", name, free>>20, total>>20)
	if free <= 0 || total < free {
		t.Fatalf("MemInfo = %d, %d", free, total)
	}
	b, err := dev.Alloc(256 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	free2, _, err := dev.MemInfo()
	if err != nil {
		t.Fatal(err)
	}
	if free2 > free-(200<<20) {
		t.Errorf("free %d → %d after allocating 256 MiB", free, free2)
	}
}

func TestBufferRoundTrip(t *testing.T) {
	r := newRand(t)
	src := nonZero(r, 12345, 100)
	b, err := dev.Alloc(byteLen(src))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	if err := CopyIn(b, src); err != nil {
		t.Fatal(err)
	}
	got := poisonF32(len(src))
	if err := CopyOut(got, b); err != nil {
		t.Fatal(err)
	}
	for i := range src {
		if math.Float32bits(got[i]) != math.Float32bits(src[i]) {
			t.Fatalf("[%d] = %v, want %v", i, got[i], src[i])
		}
	}
	if err := CopyIn(b, make([]float32, len(src)+1)); !errors.Is(err, kernels.ErrInvalidArgument) {
		t.Errorf("oversized CopyIn: %v", err)
	}
	if err := b.Free(); err != nil {
		t.Fatal(err)
	}
	if err := b.Free(); err != nil {
		t.Errorf("second Free: %v", err)
	}
}

func TestF16Conversions(t *testing.T) {
	onDevice(t, kF32ToF16)
	onDevice(t, kF16ToF32)
	r := newRand(t)
	for _, n := range []int{1, 255, 257, 100003} {
		src := nonZero(r, n, 60000)
		// Include subnormal, overflow and special values by construction.
		if n > 8 {
			src[0], src[1], src[2] = 1e-7, 7e4, float32(math.Inf(-1))
			src[3] = 3e-5
		}
		ref := make([]uint16, n)
		if err := cpu.F32ToF16(ref, src); err != nil {
			t.Fatal(err)
		}
		got := poisonU16(n)
		if err := dev.F32ToF16(got, src); err != nil {
			t.Fatal(err)
		}
		// Round-to-nearest-even is exact; a mismatch is a kernel bug.
		for i := range ref {
			if got[i] != ref[i] {
				t.Fatalf("n=%d F32ToF16[%d](%v) = %#04x, want %#04x", n, i, src[i], got[i], ref[i])
			}
		}
		back := poisonF32(n)
		if err := dev.F16ToF32(back, ref); err != nil {
			t.Fatal(err)
		}
		want := make([]float32, n)
		if err := cpu.F16ToF32(want, ref); err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if math.Float32bits(back[i]) != math.Float32bits(want[i]) {
				t.Fatalf("n=%d F16ToF32[%d](%#04x) = %v, want %v", n, i, ref[i], back[i], want[i])
			}
		}
	}
}

type imgCase struct{ w, h, pad, c, outW, outH int }

var imgCases = []imgCase{
	{37, 23, 0, 3, 64, 48},   // upscale
	{300, 211, 5, 4, 97, 61}, // downscale, padded stride
	{64, 64, 3, 1, 64, 64},   // gray, same size
	{1, 1, 0, 3, 7, 5},       // single pixel
	{513, 257, 1, 3, 1024, 1024},
}

func TestImageToTensor(t *testing.T) {
	onDevice(t, kImageToTensor)
	onDevice(t, kImageToTensorF16)
	r := newRand(t)
	mean := [3]float32{0.485, 0.456, 0.406}
	std := [3]float32{0.229, 0.224, 0.225}
	for _, tc := range imgCases {
		t.Run(fmt.Sprintf("%dx%dx%d_to_%dx%d", tc.w, tc.h, tc.c, tc.outW, tc.outH), func(t *testing.T) {
			stride := tc.w*tc.c + tc.pad
			src := bytesRand(r, (tc.h-1)*stride+tc.w*tc.c) // last row unpadded
			n := 3 * tc.outW * tc.outH
			ref := make([]float32, n)
			if err := cpu.ImageToTensor(ref, src, tc.w, tc.h, stride, tc.c, tc.outW, tc.outH, 255, mean, std); err != nil {
				t.Fatal(err)
			}
			got := poisonF32(n)
			if err := dev.ImageToTensor(got, src, tc.w, tc.h, stride, tc.c, tc.outW, tc.outH, 255, mean, std); err != nil {
				t.Fatal(err)
			}
			if e := relErr(got, ref); !(e < tol32) {
				t.Errorf("fp32 relative error %g", e)
			}
			got16 := poisonU16(n)
			if err := dev.ImageToTensorF16(got16, src, tc.w, tc.h, stride, tc.c, tc.outW, tc.outH, 255, mean, std); err != nil {
				t.Fatal(err)
			}
			if e := relErr(f16s(t, got16), ref); !(e < tol16) {
				t.Errorf("fp16 relative error %g", e)
			}
		})
	}
	err := dev.ImageToTensor(make([]float32, 3*4*4), make([]uint8, 10), 4, 4, 12, 3, 4, 4, 255, mean, std)
	if !errors.Is(err, kernels.ErrInvalidArgument) {
		t.Errorf("short src: %v", err)
	}
}

func TestResizePlane(t *testing.T) {
	onDevice(t, kResizePlane)
	r := newRand(t)
	for _, c := range [][4]int{{17, 9, 40, 31}, {640, 480, 321, 199}, {1, 1, 3, 3}, {100, 100, 100, 100}} {
		sw, sh, dw, dh := c[0], c[1], c[2], c[3]
		src := nonZero(r, sw*sh, 10)
		ref := make([]float32, dw*dh)
		if err := cpu.ResizePlane(ref, dw, dh, src, sw, sh); err != nil {
			t.Fatal(err)
		}
		got := poisonF32(dw * dh)
		if err := dev.ResizePlane(got, dw, dh, src, sw, sh); err != nil {
			t.Fatal(err)
		}
		if e := relErr(got, ref); !(e < tol32) {
			t.Errorf("%dx%d→%dx%d: relative error %g", sw, sh, dw, dh, e)
		}
	}
}

func TestComposeAlpha(t *testing.T) {
	onDevice(t, kComposeAlpha)
	r := newRand(t)
	for _, tc := range []struct{ w, h, pad, c int }{{31, 17, 0, 3}, {200, 150, 7, 4}, {64, 3, 2, 1}} {
		stride := tc.w*tc.c + tc.pad
		src := bytesRand(r, (tc.h-1)*stride+tc.w*tc.c)
		// Some mask values outside [0,1] exercise the clamp.
		mask := nonZero(r, tc.w*tc.h, 1.3)
		ref := make([]uint8, 4*tc.w*tc.h)
		if err := cpu.ComposeAlpha(ref, src, tc.w, tc.h, stride, tc.c, mask); err != nil {
			t.Fatal(err)
		}
		got := poisonU8(len(ref))
		if err := dev.ComposeAlpha(got, src, tc.w, tc.h, stride, tc.c, mask); err != nil {
			t.Fatal(err)
		}
		// Alpha rounding may differ by one where fused multiply-add
		// changes round(mask*255); colour channels must match exactly.
		for i := range ref {
			d := int(got[i]) - int(ref[i])
			if d != 0 && (i%4 != 3 || d < -1 || d > 1) {
				t.Fatalf("%+v: [%d] = %d, want %d", tc, i, got[i], ref[i])
			}
		}
	}
}

func TestBlendTiles(t *testing.T) {
	onDevice(t, kBlendTile)
	onDevice(t, kNormalizeBlend)
	r := newRand(t)
	const c, H, W, th, tw, ov = 3, 90, 130, 48, 64, 16
	accRef := nonZero(r, c*H*W, 1) // non-zero start so "+=" is checked
	wsRef := unit(r, H*W)
	acc := append([]float32(nil), accRef...)
	ws := append([]float32(nil), wsRef...)
	// A grid of overlapping tiles, the last ones clamped to the border.
	for y0 := 0; ; y0 += th - ov {
		y0 = min(y0, H-th)
		for x0 := 0; ; x0 += tw - ov {
			x0 = min(x0, W-tw)
			tile := nonZero(r, c*th*tw, 5)
			if err := cpu.BlendTile(accRef, wsRef, c, H, W, tile, th, tw, x0, y0, ov); err != nil {
				t.Fatal(err)
			}
			if err := dev.BlendTile(acc, ws, c, H, W, tile, th, tw, x0, y0, ov); err != nil {
				t.Fatal(err)
			}
			if x0 == W-tw {
				break
			}
		}
		if y0 == H-th {
			break
		}
	}
	if e := relErr(acc, accRef); !(e < tol32) {
		t.Errorf("acc relative error %g", e)
	}
	if e := relErr(ws, wsRef); !(e < tol32) {
		t.Errorf("wsum relative error %g", e)
	}
	// Uncovered pixels (wsum 0) must become 0, so set a few.
	for i := 0; i < H*W; i += 97 {
		wsRef[i] = 0
	}
	copy(ws, wsRef)
	copy(acc, accRef)
	if err := cpu.NormalizeBlend(accRef, wsRef, c); err != nil {
		t.Fatal(err)
	}
	if err := dev.NormalizeBlend(acc, ws, c); err != nil {
		t.Fatal(err)
	}
	if e := relErr(acc, accRef); !(e < tol32) {
		t.Errorf("normalized relative error %g", e)
	}
	err := dev.BlendTile(acc, ws, c, H, W, make([]float32, c*th*tw), th, tw, W-tw+1, 0, ov)
	if !errors.Is(err, kernels.ErrInvalidArgument) {
		t.Errorf("tile outside canvas: %v", err)
	}
}

func TestForegroundEstimate(t *testing.T) {
	t.Log("ForegroundEstimate has no device kernel; comparing the CPU fallback")
	r := newRand(t)
	const w, h = 97, 61
	img := unit(r, 3*w*h)
	alpha := unit(r, w*h)
	ref := make([]float32, 3*w*h)
	if err := cpu.ForegroundEstimate(ref, img, alpha, w, h); err != nil {
		t.Fatal(err)
	}
	got := poisonF32(3 * w * h)
	if err := dev.ForegroundEstimate(got, img, alpha, w, h); err != nil {
		t.Fatal(err)
	}
	if e := relErr(got, ref); !(e < tol32) {
		t.Errorf("relative error %g", e)
	}
}

func TestLaunchArgsAreEightBytes(t *testing.T) {
	got := slots([]arg{i32(-2), f32(1.5), i32(maxInt32), null})
	want := []uint64{0xfffffffe, uint64(math.Float32bits(1.5)), maxInt32, 0}
	for i, v := range want {
		if got[i] != v {
			t.Errorf("slot %d = %#x, want %#x", i, got[i], v)
		}
	}
}

func TestClosed(t *testing.T) {
	d, err := New(WithPTX(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.MemInfo(); !errors.Is(err, ErrClosed) {
		t.Errorf("MemInfo after Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestGuidanceAxpby(t *testing.T) {
	onDevice(t, kGuidance)
	onDevice(t, kAxpby)
	r := newRand(t)
	for _, n := range []int{1, 1000, 4 * 128 * 128} {
		u, c, z := nonZero(r, n, 3), nonZero(r, n, 3), nonZero(r, n, 3)
		ref := make([]float32, n)
		if err := cpu.Guidance(ref, u, c, 7.5); err != nil {
			t.Fatal(err)
		}
		got := poisonF32(n)
		if err := dev.Guidance(got, u, c, 7.5); err != nil {
			t.Fatal(err)
		}
		if e := relErr(got, ref); !(e < tol32) {
			t.Errorf("n=%d Guidance relative error %g", n, e)
		}
		for _, zz := range [][]float32{nil, z} {
			if err := cpu.Axpby(ref, u, 0.9, c, -0.3, zz, 0.2); err != nil {
				t.Fatal(err)
			}
			got := poisonF32(n)
			if err := dev.Axpby(got, u, 0.9, c, -0.3, zz, 0.2); err != nil {
				t.Fatal(err)
			}
			if e := relErr(got, ref); !(e < tol32) {
				t.Errorf("n=%d z=%v Axpby relative error %g", n, zz != nil, e)
			}
		}
		// dst may alias an input.
		x := append([]float32(nil), u...)
		if err := dev.Axpby(x, x, 0.9, c, -0.3, z, 0.2); err != nil {
			t.Fatal(err)
		}
		if e := relErr(x, ref); !(e < tol32) {
			t.Errorf("n=%d aliased Axpby relative error %g", n, e)
		}
	}
}

func TestResizeMask(t *testing.T) {
	onDevice(t, kResizeMask)
	r := newRand(t)
	for _, c := range [][4]int{{320, 320, 517, 389}, {1024, 1024, 300, 200}, {2, 3, 5, 7}} {
		sw, sh, dw, dh := c[0], c[1], c[2], c[3]
		src := nonZero(r, sw*sh, 4)
		ref := make([]float32, dw*dh)
		if err := cpu.ResizeMask(ref, dw, dh, src, sw, sh, -2, 3); err != nil {
			t.Fatal(err)
		}
		got := poisonF32(dw * dh)
		if err := dev.ResizeMask(got, dw, dh, src, sw, sh, -2, 3); err != nil {
			t.Fatal(err)
		}
		if e := relErr(got, ref); !(e < tol32) {
			t.Errorf("%dx%d→%dx%d: relative error %g", sw, sh, dw, dh, e)
		}
	}
	err := dev.ResizeMask(make([]float32, 4), 2, 2, make([]float32, 4), 2, 2, 1, 1)
	if !errors.Is(err, kernels.ErrInvalidArgument) {
		t.Errorf("hi == lo: %v", err)
	}
}

func TestMel(t *testing.T) {
	onDevice(t, kPowerSpectrum)
	onDevice(t, kMelFilterbank)
	r := newRand(t)
	const nMels, nBins, nFrames = 80, 201, 3000
	re, im := nonZero(r, nFrames*nBins, 2), nonZero(r, nFrames*nBins, 2)
	spec := make([]complex64, nFrames*nBins)
	for i := range spec {
		spec[i] = complex(re[i], im[i])
	}
	ref := make([]float32, len(spec))
	if err := cpu.PowerSpectrum(ref, spec); err != nil {
		t.Fatal(err)
	}
	got := poisonF32(len(spec))
	if err := dev.PowerSpectrum(got, spec); err != nil {
		t.Fatal(err)
	}
	if e := relErr(got, ref); !(e < tol32) {
		t.Errorf("PowerSpectrum relative error %g", e)
	}
	// Sparse triangular-ish filters: most taps zero, as in a mel matrix.
	filters := make([]float32, nMels*nBins)
	for m := range nMels {
		c := 1 + m*(nBins-2)/nMels
		for k := max(c-3, 0); k <= min(c+3, nBins-1); k++ {
			filters[m*nBins+k] = 0.01 + r.Float32()
		}
	}
	mref := make([]float32, nMels*nFrames)
	if err := cpu.MelFilterbank(mref, filters, nMels, nBins, ref, nFrames, 1e-10); err != nil {
		t.Fatal(err)
	}
	mgot := poisonF32(nMels * nFrames)
	if err := dev.MelFilterbank(mgot, filters, nMels, nBins, ref, nFrames, 1e-10); err != nil {
		t.Fatal(err)
	}
	if e := relErr(mgot, mref); !(e < tol32) {
		t.Errorf("MelFilterbank relative error %g", e)
	}
}

// TestGridStride launches the grid-stride kernels directly with thread
// counts from one block to one per element (pixel, or pixel pair for
// image_to_tensor), including the one strideThreads picks and a whole
// number of rows (as it picks for large images), so the loop is checked
// with grids much smaller than the element count; the results must match
// the CPU reference bit for bit whatever the count.
func TestGridStride(t *testing.T) {
	r := newRand(t)
	const w, h, c, outH = 301, 203, 3, 389
	src := bytesRand(r, w*h*c)
	planeSrc := nonZero(r, w*h, 10)
	// counts are the thread counts for n elements in rows of rw.
	counts := func(n, rw int) []int { return []int{1, 256, 1000, 7 * rw, strideThreads(n, rw), n} }
	// Odd width: rows straddle blocks, pairs straddle nothing but the last
	// pixel of a row is alone. Even width: the paired stores.
	for _, outW := range []int{517, 518} {
		plane := outW * outH
		pw := (outW + 1) / 2
		for _, threads := range counts(pw*outH, pw) {
			name := fmt.Sprintf("image_to_tensor %dx%d, %d threads", outW, outH, threads)
			gridStrideCase(t, name, kImageToTensor, threads, src, 3*plane,
				func(dst []float32) error {
					return cpu.ImageToTensor(dst, src, w, h, w*c, c, outW, outH, 255,
						[3]float32{0.485, 0.456, 0.406}, [3]float32{0.229, 0.224, 0.225})
				},
				func(outP, inP arg) []arg {
					return []arg{outP, inP, i32(w), i32(h), i32(w * c), i32(c), i32(outW), i32(outH),
						f32(255), f32(0.485), f32(0.456), f32(0.406), f32(0.229), f32(0.224), f32(0.225)}
				})
		}
		for _, threads := range counts(plane, outW) {
			name := fmt.Sprintf("resize_plane %dx%d, %d threads", outW, outH, threads)
			gridStrideCase(t, name, kResizePlane, threads, planeSrc, plane,
				func(dst []float32) error { return cpu.ResizePlane(dst, outW, outH, planeSrc, w, h) },
				func(outP, inP arg) []arg {
					return []arg{outP, i32(outW), i32(outH), inP, i32(w), i32(h)}
				})
		}
	}
}

// gridStrideCase runs kernel with the given thread count on src (uploaded)
// into an n-float output and compares it bit for bit with the CPU
// reference that ref computes. mk lists the kernel's arguments around the
// output and input pointer arguments it is given.
func gridStrideCase[S any](t *testing.T, name, kernel string, threads int, src []S, n int,
	ref func([]float32) error, mk func(outP, inP arg) []arg) {
	t.Helper()
	if !dev.HasKernel(kernel) {
		return
	}
	want := make([]float32, n)
	if err := ref(want); err != nil {
		t.Fatal(err)
	}
	got := poisonF32(n)
	if err := dev.launch(kernel, threads, mk(out(got), in(src))...); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Errorf("%s: [%d] = %v, CPU %v", name, i, got[i], want[i])
			return
		}
	}
}
