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
// a kernel) calls the CPU method, which also produces the argument errors.
// Inputs are uploaded to their own buffers, so dst may alias an input as
// Extended allows.

// Guidance implements kernels.Extended.
func (d *Device) Guidance(dst, uncond, cond []float32, g float32) error {
	n := len(dst)
	if n == 0 || len(uncond) != n || len(cond) != n || !fitsInt32(n) || !d.HasKernel(kGuidance) {
		return d.CPU.Guidance(dst, uncond, cond, g)
	}
	return d.run(func(s *scratch) error {
		u, err := upload(s, uncond)
		if err != nil {
			return err
		}
		c, err := upload(s, cond)
		if err != nil {
			return err
		}
		out, err := s.out(byteLen(dst))
		if err != nil {
			return err
		}
		if err := d.launch(kGuidance, n, new(args).ptr(out).ptr(u).ptr(c).f32(g).i32(n)); err != nil {
			return err
		}
		return CopyOut(dst, out)
	})
}

// Axpby implements kernels.Extended.
func (d *Device) Axpby(dst, x []float32, a float32, y []float32, b float32, z []float32, c float32) error {
	n := len(dst)
	if n == 0 || len(x) != n || len(y) != n || (z != nil && len(z) != n) || !fitsInt32(n) || !d.HasKernel(kAxpby) {
		return d.CPU.Axpby(dst, x, a, y, b, z, c)
	}
	return d.run(func(s *scratch) error {
		xb, err := upload(s, x)
		if err != nil {
			return err
		}
		yb, err := upload(s, y)
		if err != nil {
			return err
		}
		zb := &Buffer{} // a 0 pointer selects the two-term form
		if z != nil {
			if zb, err = upload(s, z); err != nil {
				return err
			}
		}
		out, err := s.out(byteLen(dst))
		if err != nil {
			return err
		}
		p := new(args).ptr(out).ptr(xb).f32(a).ptr(yb).f32(b).ptr(zb).f32(c).i32(n)
		if err := d.launch(kAxpby, n, p); err != nil {
			return err
		}
		return CopyOut(dst, out)
	})
}

// ResizeMask implements kernels.Extended.
func (d *Device) ResizeMask(dst []float32, dw, dh int, src []float32, sw, sh int, lo, hi float32) error {
	sn, ok1 := area(sw, sh)
	dn, ok2 := area(dw, dh)
	if !(hi > lo) || !ok1 || !ok2 || len(src) != sn || len(dst) != dn || !d.HasKernel(kResizeMask) {
		return d.CPU.ResizeMask(dst, dw, dh, src, sw, sh, lo, hi)
	}
	return d.run(func(s *scratch) error {
		in, err := upload(s, src)
		if err != nil {
			return err
		}
		out, err := s.out(byteLen(dst))
		if err != nil {
			return err
		}
		p := new(args).ptr(out).i32(dw).i32(dh).ptr(in).i32(sw).i32(sh).f32(lo).f32(hi)
		if err := d.launch(kResizeMask, strideThreads(dn, dw), p); err != nil {
			return err
		}
		return CopyOut(dst, out)
	})
}

// PowerSpectrum implements kernels.Extended.
func (d *Device) PowerSpectrum(dst []float32, spec []complex64) error {
	n := len(dst)
	if n == 0 || len(spec) != n || !fitsInt32(2*n) || !d.HasKernel(kPowerSpectrum) {
		return d.CPU.PowerSpectrum(dst, spec)
	}
	return d.run(func(s *scratch) error {
		in, err := upload(s, spec) // complex64 is (re, im) float32 pairs
		if err != nil {
			return err
		}
		out, err := s.out(byteLen(dst))
		if err != nil {
			return err
		}
		if err := d.launch(kPowerSpectrum, n, new(args).ptr(out).ptr(in).i32(n)); err != nil {
			return err
		}
		return CopyOut(dst, out)
	})
}

// MelFilterbank implements kernels.Extended.
func (d *Device) MelFilterbank(dst, filters []float32, nMels, nBins int, power []float32, nFrames int, floor float32) error {
	fn, ok1 := area(nMels, nBins)
	pn, ok2 := area(nFrames, nBins)
	dn, ok3 := area(nMels, nFrames)
	if !ok1 || !ok2 || !ok3 || len(filters) != fn || len(power) != pn || len(dst) != dn ||
		!(floor > 0) || math.IsInf(float64(floor), 1) || !d.HasKernel(kMelFilterbank) {
		return d.CPU.MelFilterbank(dst, filters, nMels, nBins, power, nFrames, floor)
	}
	return d.run(func(s *scratch) error {
		f, err := upload(s, filters)
		if err != nil {
			return err
		}
		p, err := upload(s, power)
		if err != nil {
			return err
		}
		out, err := s.out(byteLen(dst))
		if err != nil {
			return err
		}
		a := new(args).ptr(out).ptr(f).i32(nMels).i32(nBins).ptr(p).i32(nFrames).f32(floor)
		if err := d.launch(kMelFilterbank, dn, a); err != nil {
			return err
		}
		return CopyOut(dst, out)
	})
}
