//go:build cuda

package cuda

import (
	"math"

	"github.com/falocal/falocal/kernels"
)

// Entry points for kernels.Extended (same convention as in ops.go).
const (
	// cfg_guidance(float* dst, const float* uncond, const float* cond, float g, int n) (n)
	kGuidance = "cfg_guidance"
	// axpby(float* dst, const float* x, float a, const float* y, float b,
	//   const float* z, float c, int n); z may be a 0 pointer             (n)
	kAxpby = "axpby"
	// resize_mask(float* dst, int dw, int dh, const float* src, int sw, int sh,
	//   float lo, float hi)                                               (stride)
	kResizeMask = "resize_mask"
	// power_spectrum(float* dst, const float* spec, int n); spec is n
	//   interleaved (re, im) pairs, as []complex64                        (n)
	kPowerSpectrum = "power_spectrum"
	// mel_filterbank(float* dst, const float* filters, int nMels, int nBins,
	//   const float* power, int nFrames, float floor)                     (nMels*nFrames)
	kMelFilterbank = "mel_filterbank"
)

var _ kernels.Extended = (*Device)(nil)

func init() {
	kernelNames = append(kernelNames, kGuidance, kAxpby, kResizeMask, kPowerSpectrum, kMelFilterbank)
}

// Each method below checks what the launch needs and otherwise (or without
// a kernel) calls the CPU method, which also produces the argument errors
// (fallback in ops.go). Inputs are uploaded to their own buffers (in), so
// dst may alias an input as Extended allows.

// Guidance implements kernels.Extended.
func (d *Device) Guidance(dst, uncond, cond []float32, g float32) error {
	n := len(dst)
	if d.fallback(kGuidance, n > 0 && len(uncond) == n && len(cond) == n && fitsInt32(n)) {
		return d.CPU.Guidance(dst, uncond, cond, g)
	}
	return d.launch(kGuidance, n, out(dst), in(uncond), in(cond), f32(g), i32(n))
}

// Axpby implements kernels.Extended.
func (d *Device) Axpby(dst, x []float32, a float32, y []float32, b float32, z []float32, c float32) error {
	n := len(dst)
	if d.fallback(kAxpby, n > 0 && len(x) == n && len(y) == n && (z == nil || len(z) == n) && fitsInt32(n)) {
		return d.CPU.Axpby(dst, x, a, y, b, z, c)
	}
	zArg := null // selects the two-term form
	if z != nil {
		zArg = in(z)
	}
	return d.launch(kAxpby, n, out(dst), in(x), f32(a), in(y), f32(b), zArg, f32(c), i32(n))
}

// ResizeMask implements kernels.Extended.
func (d *Device) ResizeMask(dst []float32, dw, dh int, src []float32, sw, sh int, lo, hi float32) error {
	sn, ok1 := area(sw, sh)
	dn, ok2 := area(dw, dh)
	if d.fallback(kResizeMask, hi > lo && ok1 && ok2 && len(src) == sn && len(dst) == dn) {
		return d.CPU.ResizeMask(dst, dw, dh, src, sw, sh, lo, hi)
	}
	return d.launch(kResizeMask, strideThreads(dn, dw),
		out(dst), i32(dw), i32(dh), in(src), i32(sw), i32(sh), f32(lo), f32(hi))
}

// PowerSpectrum implements kernels.Extended.
func (d *Device) PowerSpectrum(dst []float32, spec []complex64) error {
	n := len(dst)
	if d.fallback(kPowerSpectrum, n > 0 && len(spec) == n && fitsInt32(2*n)) {
		return d.CPU.PowerSpectrum(dst, spec)
	}
	// complex64 is (re, im) float32 pairs, as the kernel reads them.
	return d.launch(kPowerSpectrum, n, out(dst), in(spec), i32(n))
}

// MelFilterbank implements kernels.Extended.
func (d *Device) MelFilterbank(dst, filters []float32, nMels, nBins int, power []float32, nFrames int, floor float32) error {
	fn, ok1 := area(nMels, nBins)
	pn, ok2 := area(nFrames, nBins)
	dn, ok3 := area(nMels, nFrames)
	if d.fallback(kMelFilterbank, ok1 && ok2 && ok3 && len(filters) == fn && len(power) == pn && len(dst) == dn &&
		floor > 0 && !math.IsInf(float64(floor), 1)) {
		return d.CPU.MelFilterbank(dst, filters, nMels, nBins, power, nFrames, floor)
	}
	return d.launch(kMelFilterbank, dn,
		out(dst), in(filters), i32(nMels), i32(nBins), in(power), i32(nFrames), f32(floor))
}
