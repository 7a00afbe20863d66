package kernels

import "math"

// PowerSpectrum implements Extended.
func (CPU) PowerSpectrum(dst []float32, spec []complex64) error {
	if len(dst) != len(spec) {
		return argErr("PowerSpectrum", "len(dst)=%d != len(spec)=%d", len(dst), len(spec))
	}
	parallelFor(len(spec), 1<<16, func(lo, hi int) {
		d, s := dst[lo:hi], spec[lo:hi]
		for i, v := range s {
			re, im := real(v), imag(v)
			// Rounded products, as mel.cu (--fmad=false); see step.go.
			d[i] = float32(re*re) + float32(im*im)
		}
	})
	return nil
}

// MelFilterbank implements Extended.
func (CPU) MelFilterbank(dst, filters []float32, nMels, nBins int, power []float32, nFrames int, floor float32) error {
	const op = "MelFilterbank"
	if fn, ok := area(nMels, nBins); !ok || len(filters) != fn {
		return argErr(op, "len(filters)=%d for %d mels x %d bins", len(filters), nMels, nBins)
	}
	if pn, ok := area(nFrames, nBins); !ok || len(power) != pn {
		return argErr(op, "len(power)=%d for %d frames x %d bins", len(power), nFrames, nBins)
	}
	if dn, ok := area(nMels, nFrames); !ok || len(dst) != dn {
		return argErr(op, "len(dst)=%d for %d mels x %d frames", len(dst), nMels, nFrames)
	}
	if !(floor > 0) || math.IsInf(float64(floor), 1) {
		return argErr(op, "floor %v must be positive and finite", floor)
	}
	parallelFor(nMels, 1, func(lo, hi int) {
		for m := lo; m < hi; m++ {
			w := filters[m*nBins : (m+1)*nBins]
			out := dst[m*nFrames : (m+1)*nFrames]
			for f := range out {
				p := power[f*nBins : (f+1)*nBins]
				p = p[:len(w)]
				var s float32
				for k, wk := range w {
					if wk != 0 {
						s += float32(wk * p[k])
					}
				}
				if !(s > floor) { // negated so a NaN sum clamps too
					s = floor
				}
				out[f] = float32(math.Log10(float64(s)))
			}
		}
	})
	return nil
}
