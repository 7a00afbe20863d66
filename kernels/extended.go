package kernels

// Extended is Kernels plus the operations added for sampler steps, mask
// post-processing and log-mel features (issue 8). It is its own interface,
// not new methods on Kernels, because kernels/cuda's Device (cuda build)
// implements Kernels method by method rather than by embedding CPU, so new
// Kernels methods would break that build until it grows them; fold these
// into Kernels once it does. Element-wise methods allow dst to be the same
// slice as an input, but not a partial overlap.
type Extended interface {
	Kernels
	// Guidance writes classifier-free guidance, dst = u + g*(c - u), from
	// the unconditional and conditional model outputs.
	Guidance(dst, uncond, cond []float32, g float32) error
	// Axpby writes dst = x*a + y*b, plus z*c when z is not nil: the single
	// fused pass that Euler, DDIM and flow-matching updates reduce to. Each
	// product is rounded before the sums, left to right.
	Axpby(dst, x []float32, a float32, y []float32, b float32, z []float32, c float32) error
	// ResizeMask resizes a float plane like ResizePlane, then maps each value
	// v to (v-lo)/(hi-lo) clamped to [0,1], NaN to 0: a model's raw mask to
	// an alpha matte at image size in one pass (lo, hi = 0, 1 only clamps;
	// the mask's min and max give min-max normalisation). hi must exceed lo.
	ResizeMask(dst []float32, dw, dh int, src []float32, sw, sh int, lo, hi float32) error
	// PowerSpectrum writes |X|² = re² + im² of each complex STFT value.
	PowerSpectrum(dst []float32, spec []complex64) error
	// MelFilterbank applies nMels×nBins filters to nFrames×nBins power
	// frames and writes the mel-major nMels×nFrames result
	// dst[m*nFrames+f] = log10(max(Σ_k filters[m*nBins+k]*power[f*nBins+k], floor)).
	// The sum runs over k in order and skips zero taps, so a non-finite
	// power bin only affects filters that cover it; a NaN sum gives floor.
	// floor must be positive (Whisper uses 1e-10).
	MelFilterbank(dst, filters []float32, nMels, nBins int, power []float32, nFrames int, floor float32) error
}

var _ Extended = CPU{}
