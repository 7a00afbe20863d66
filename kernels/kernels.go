// Package kernels holds the numeric work an inference server does between
// model calls: image-to-tensor preprocessing, plane resizing, float16
// conversion, alpha composition, tile blending and foreground colour
// estimation.
//
// The operations are expressed by the Kernels interface using plain slices
// and ints only, so that an accelerator implementation can later sit behind
// the same signatures. CPU is the reference implementation; it is
// deterministic regardless of GOMAXPROCS because every output element is
// computed by the same arithmetic no matter how rows are split among
// goroutines.
package kernels

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
)

// Kernels is the set of between-model operations.
//
// All methods validate their arguments and return an error wrapping
// ErrInvalidArgument instead of panicking or writing out of range.
type Kernels interface {
	// ImageToTensor resizes an 8-bit interleaved image (HWC, c = 1, 3 or 4
	// channels, row stride in bytes) with bilinear interpolation (half-pixel
	// centres, edge clamp, like OpenCV INTER_LINEAR / PIL without antialias)
	// to outW×outH and writes float32 NCHW planes for the first 3 channels
	// (gray is replicated to 3):
	// dst[c*outH*outW + y*outW + x] = (v/scale - mean[c]) / std[c]
	// where v is the interpolated 0..255 value. len(dst) must be 3*outH*outW.
	ImageToTensor(dst []float32, src []uint8, w, h, stride, c, outW, outH int, scale float32, mean, std [3]float32) error
	// ImageToTensorF16 is ImageToTensor writing IEEE binary16 bits,
	// rounded to nearest even.
	ImageToTensorF16(dst []uint16, src []uint8, w, h, stride, c, outW, outH int, scale float32, mean, std [3]float32) error
	// ResizePlane bilinear-resizes one float32 plane (sw×sh) to dw×dh with
	// the same interpolation rule as ImageToTensor.
	ResizePlane(dst []float32, dw, dh int, src []float32, sw, sh int) error
	// ComposeAlpha writes tightly packed non-premultiplied RGBA from an
	// 8-bit source (c = 1, 3 or 4 channels, row stride in bytes) and a w×h
	// mask clamped to [0,1]: alpha = round(mask*255), multiplied by the
	// source alpha/255 when c == 4. Gray sources are replicated to RGB.
	ComposeAlpha(dst []uint8, src []uint8, w, h, stride, c int, mask []float32) error
	// F32ToF16 converts float32 values to binary16 bits (round to nearest
	// even; overflow gives ±Inf, NaN stays NaN, subnormals are produced).
	F32ToF16(dst []uint16, src []float32) error
	// F16ToF32 converts binary16 bits to float32 exactly.
	F16ToF32(dst []float32, src []uint16) error
	// BlendTile accumulates a c×th×tw planar tile placed at (x0,y0) into a
	// c×H×W planar canvas: acc += tile*weight, wsum += weight. The weight
	// is a separable linear ramp over overlap pixels at the tile's inner
	// edges; edges touching the canvas border get weight 1. The tile must
	// lie inside the canvas. Weights of two tiles overlapping by exactly
	// overlap pixels sum to 1, so seams vanish.
	BlendTile(acc, wsum []float32, c, H, W int, tile []float32, th, tw, x0, y0, overlap int) error
	// NormalizeBlend divides each of the c planes of acc by wsum in place;
	// pixels no tile covered (wsum == 0) become 0.
	NormalizeBlend(acc []float32, wsum []float32, c int) error
	// ForegroundEstimate estimates the foreground colour F (3×h×w planar)
	// from an RGB image in [0,1] (3×h×w planar) and an alpha matte in
	// [0,1] (h×w) by blur fusion (Forte & Pitié 2021, two passes with box
	// radius 90 then 6, as BiRefNet's refine_foreground). dstF must not
	// overlap img or alpha.
	ForegroundEstimate(dstF []float32, img []float32, alpha []float32, w, h int) error
}

// CPU is the reference implementation of Kernels. Its zero value is ready
// to use. It spreads rows over goroutines, with results independent of the
// split.
type CPU struct{}

var _ Kernels = CPU{}

// ErrInvalidArgument is wrapped by every argument-validation error so
// callers can tell bad input apart from other failures.
var ErrInvalidArgument = errors.New("kernels: invalid argument")

func argErr(op, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidArgument, op, fmt.Sprintf(format, args...))
}

// area returns the product of dims; ok is false if any factor is
// non-positive or the product exceeds maxElems, so that later index
// arithmetic (which multiplies by at most a few channels) can never wrap.
func area(dims ...int) (int, bool) {
	p := 1
	for _, d := range dims {
		if d <= 0 || p > maxElems/d {
			return 0, false
		}
		p *= d
	}
	return p, true
}

// maxElems leaves headroom below MaxInt for multiplying by channel counts.
const maxElems = math.MaxInt / 16

// checkImage validates an interleaved 8-bit image description.
func checkImage(op string, src []uint8, w, h, stride, c int) error {
	if w <= 0 || h <= 0 {
		return argErr(op, "image size %dx%d must be positive", w, h)
	}
	if c != 1 && c != 3 && c != 4 {
		return argErr(op, "channels %d must be 1, 3 or 4", c)
	}
	rowBytes, ok := area(w, c)
	if !ok {
		return argErr(op, "image width %d too large", w)
	}
	if stride < rowBytes {
		return argErr(op, "stride %d smaller than width*channels %d", stride, rowBytes)
	}
	if _, ok := area(stride, h); !ok {
		return argErr(op, "image %dx%d with stride %d too large", w, h, stride)
	}
	// The last row need not be padded to the full stride.
	if need := (h-1)*stride + rowBytes; len(src) < need {
		return argErr(op, "len(src)=%d, need at least %d for %dx%dx%d stride %d", len(src), need, w, h, c, stride)
	}
	return nil
}

// parallelFor calls fn over disjoint [lo,hi) ranges covering [0,n), using
// up to GOMAXPROCS goroutines with at least grain items each. Callers must
// make fn's output independent of the split so results stay deterministic.
func parallelFor(n, grain int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	workers := min(runtime.GOMAXPROCS(0), n/grain)
	if workers <= 1 {
		fn(0, n)
		return
	}
	chunk := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}
