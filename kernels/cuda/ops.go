//go:build cuda

package cuda

import (
	"fmt"

	"github.com/falocal/falocal/kernels"
)

// Kernel entry points this package launches, all extern "C" in the PTX
// module, in a 1-D grid of blockSize-thread blocks. The thread count is
// given in parentheses: "(n)" is one thread per output element (index =
// blockIdx.x*blockDim.x+threadIdx.x, return when index >= n); "(n/8)" is
// ceil(n/8) threads of 8 elements each (convertThreads), "(n/4)" ceil(n/4)
// threads of 4 pixels (composeThreads); "(stride)" is a grid-stride loop
// over the pixels, correct for any count (strideThreads), and
// "(stride, pairs)" the same over pairs of horizontally adjacent pixels (a
// raster ceil(outW/2) wide). int is 32-bit, float is fp32, u16 holds
// binary16 bits, pointers are device pointers: whole cuMemAlloc buffers,
// whose alignment (256 bytes) the vector accesses of convert.cu,
// compose_alpha and image_to_tensor rely on. Each has the meaning of the
// kernels.CPU method of the same name.
//
// The modules come from kernels.PTX(); kernels.Entries() says which module
// holds each entry and its parameter kinds, which launch checks against
// the arguments built here. A missing entry leaves that operation on the
// CPU reference.
const (
	// f32_to_f16(u16* dst, const float* src, int n)                          (n/8)
	kF32ToF16 = "f32_to_f16"
	// f16_to_f32(float* dst, const u16* src, int n)                          (n/8)
	kF16ToF32 = "f16_to_f32"
	// image_to_tensor(float* dst, const u8* src, int w, int h, int stride, int c,
	//   int outW, int outH, float scale, float m0, float m1, float m2,
	//   float s0, float s1, float s2)                                         (stride, pairs)
	kImageToTensor = "image_to_tensor"
	// image_to_tensor_f16: as image_to_tensor with u16* dst                   (stride, pairs)
	kImageToTensorF16 = "image_to_tensor_f16"
	// resize_plane(float* dst, int dw, int dh, const float* src, int sw, int sh) (stride)
	kResizePlane = "resize_plane"
	// compose_alpha(u8* dst, const u8* src, int w, int h, int stride, int c,
	//   const float* mask)                                                    (n/4)
	kComposeAlpha = "compose_alpha"
	// blend_tile(float* acc, float* wsum, int c, int H, int W, const float* tile,
	//   int th, int tw, int x0, int y0, int overlap)                           (th*tw)
	kBlendTile = "blend_tile"
	// normalize_blend(float* acc, const float* wsum, int c, int plane)        (plane)
	kNormalizeBlend = "normalize_blend"
)

// ForegroundEstimate has no device kernel yet (two box-blur passes of
// radius 90 and 6 need a multi-kernel design); it always runs on the CPU.

var kernelNames = []string{
	kF32ToF16, kF16ToF32, kImageToTensor, kImageToTensorF16,
	kResizePlane, kComposeAlpha, kBlendTile, kNormalizeBlend,
}

func argErr(op, format string, a ...any) error {
	return fmt.Errorf("%w: %s: %s", kernels.ErrInvalidArgument, op, fmt.Sprintf(format, a...))
}

// maxInt32 bounds every element count and index the kernels compute in
// 32-bit int; larger inputs stay on the CPU.
const maxInt32 = 1<<31 - 1

// area is the product of dims if every factor is positive and the product
// fits a kernel's int.
func area(dims ...int) (int, bool) {
	p := 1
	for _, v := range dims {
		if v <= 0 || p > maxInt32/v {
			return 0, false
		}
		p *= v
	}
	return p, true
}

// checkImage mirrors the CPU rule, plus the 32-bit limit: the last row
// need not be padded to the full stride.
func checkImage(op string, src []uint8, w, h, stride, c int) (need int, err error) {
	if c != 1 && c != 3 && c != 4 {
		return 0, argErr(op, "channels %d must be 1, 3 or 4", c)
	}
	row, ok := area(w, c)
	if !ok || stride < row {
		return 0, argErr(op, "image %dx%dx%d with stride %d invalid", w, h, c, stride)
	}
	if _, ok := area(stride, h); !ok {
		return 0, argErr(op, "image %dx%d with stride %d too large", w, h, stride)
	}
	need = (h-1)*stride + row
	if len(src) < need {
		return 0, argErr(op, "len(src)=%d, need at least %d", len(src), need)
	}
	return need, nil
}

// fallback is the one rule for running an operation's kernels.CPU method
// instead of kernel name: the kernel is not loaded, or launchable is false
// (mismatched or empty lengths, counts past a C int). The CPU method then
// runs or rejects those arguments, so the device path needs no errors of
// its own for them. ImageToTensor(F16), ComposeAlpha and BlendTile pass
// true and then check their arguments themselves, 32-bit limits included
// (argErr): with their kernel loaded, invalid arguments are an error, never
// a CPU run.
func (d *Device) fallback(name string, launchable bool) bool {
	return !launchable || !d.HasKernel(name)
}

// F32ToF16 implements kernels.Kernels.
func (d *Device) F32ToF16(dst []uint16, src []float32) error {
	n := len(src)
	if d.fallback(kF32ToF16, len(dst) == n && n > 0 && fitsInt32(n)) {
		return d.CPU.F32ToF16(dst, src)
	}
	return d.launch(kF32ToF16, convertThreads(n), out(dst), in(src), i32(n))
}

// F16ToF32 implements kernels.Kernels.
func (d *Device) F16ToF32(dst []float32, src []uint16) error {
	n := len(src)
	if d.fallback(kF16ToF32, len(dst) == n && n > 0 && fitsInt32(n)) {
		return d.CPU.F16ToF32(dst, src)
	}
	return d.launch(kF16ToF32, convertThreads(n), out(dst), in(src), i32(n))
}

// ImageToTensor implements kernels.Kernels.
func (d *Device) ImageToTensor(dst []float32, src []uint8, w, h, stride, c, outW, outH int, scale float32, mean, std [3]float32) error {
	if d.fallback(kImageToTensor, true) {
		return d.CPU.ImageToTensor(dst, src, w, h, stride, c, outW, outH, scale, mean, std)
	}
	return toTensor(d, kImageToTensor, dst, src, w, h, stride, c, outW, outH, scale, mean, std)
}

// ImageToTensorF16 implements kernels.Kernels.
func (d *Device) ImageToTensorF16(dst []uint16, src []uint8, w, h, stride, c, outW, outH int, scale float32, mean, std [3]float32) error {
	if d.fallback(kImageToTensorF16, true) {
		return d.CPU.ImageToTensorF16(dst, src, w, h, stride, c, outW, outH, scale, mean, std)
	}
	return toTensor(d, kImageToTensorF16, dst, src, w, h, stride, c, outW, outH, scale, mean, std)
}

func toTensor[T float32 | uint16](d *Device, name string, dst []T, src []uint8, w, h, stride, c, outW, outH int, scale float32, mean, std [3]float32) error {
	need, err := checkImage(name, src, w, h, stride, c)
	if err != nil {
		return err
	}
	n, ok := area(3, outW, outH)
	if !ok || len(dst) != n {
		return argErr(name, "len(dst)=%d for output %dx%d", len(dst), outW, outH)
	}
	if scale == 0 || std[0] == 0 || std[1] == 0 || std[2] == 0 {
		return argErr(name, "scale %v and std %v must be non-zero", scale, std)
	}
	pw := (outW + 1) / 2 // the kernels walk pairs of adjacent pixels
	return d.launch(name, strideThreads(pw*outH, pw), out(dst), in(src[:need]),
		i32(w), i32(h), i32(stride), i32(c), i32(outW), i32(outH),
		f32(scale), f32(mean[0]), f32(mean[1]), f32(mean[2]), f32(std[0]), f32(std[1]), f32(std[2]))
}

// ResizePlane implements kernels.Kernels.
func (d *Device) ResizePlane(dst []float32, dw, dh int, src []float32, sw, sh int) error {
	sn, ok1 := area(sw, sh)
	dn, ok2 := area(dw, dh)
	if d.fallback(kResizePlane, ok1 && ok2 && len(src) == sn && len(dst) == dn) {
		return d.CPU.ResizePlane(dst, dw, dh, src, sw, sh)
	}
	return d.launch(kResizePlane, strideThreads(dn, dw), out(dst), i32(dw), i32(dh), in(src), i32(sw), i32(sh))
}

// ComposeAlpha implements kernels.Kernels.
func (d *Device) ComposeAlpha(dst []uint8, src []uint8, w, h, stride, c int, mask []float32) error {
	if d.fallback(kComposeAlpha, true) {
		return d.CPU.ComposeAlpha(dst, src, w, h, stride, c, mask)
	}
	const op = "ComposeAlpha"
	need, err := checkImage(op, src, w, h, stride, c)
	if err != nil {
		return err
	}
	n, ok := area(4, w, h)
	if !ok || len(mask) != w*h || len(dst) != n {
		return argErr(op, "len(mask)=%d, len(dst)=%d for %dx%d", len(mask), len(dst), w, h)
	}
	return d.launch(kComposeAlpha, composeThreads(w*h),
		out(dst), in(src[:need]), i32(w), i32(h), i32(stride), i32(c), in(mask))
}

// BlendTile implements kernels.Kernels. acc and wsum round-trip through
// the device on every call; a tiling pipeline that keeps the canvas
// resident should use Buffers directly (not wrapped yet).
func (d *Device) BlendTile(acc, wsum []float32, c, H, W int, tile []float32, th, tw, x0, y0, overlap int) error {
	if d.fallback(kBlendTile, true) {
		return d.CPU.BlendTile(acc, wsum, c, H, W, tile, th, tw, x0, y0, overlap)
	}
	const op = "BlendTile"
	plane, ok := area(H, W)
	cn, ok2 := area(c, H, W)
	tn, ok3 := area(c, th, tw)
	switch {
	case !ok || !ok2 || !ok3 || len(acc) != cn || len(wsum) != plane || len(tile) != tn:
		return argErr(op, "lengths acc=%d wsum=%d tile=%d do not match c=%d %dx%d tile %dx%d", len(acc), len(wsum), len(tile), c, W, H, tw, th)
	case x0 < 0 || y0 < 0 || tw > W-x0 || th > H-y0:
		return argErr(op, "tile %dx%d at (%d,%d) does not fit canvas %dx%d", tw, th, x0, y0, W, H)
	case overlap < 0 || !fitsInt32(overlap):
		return argErr(op, "overlap %d invalid", overlap)
	}
	return d.launch(kBlendTile, th*tw, inout(acc), inout(wsum), i32(c), i32(H), i32(W),
		in(tile), i32(th), i32(tw), i32(x0), i32(y0), i32(overlap))
}

// NormalizeBlend implements kernels.Kernels.
func (d *Device) NormalizeBlend(acc []float32, wsum []float32, c int) error {
	plane := len(wsum)
	if d.fallback(kNormalizeBlend, c > 0 && plane > 0 && len(acc)/c == plane && len(acc)%c == 0 && fitsInt32(len(acc))) {
		return d.CPU.NormalizeBlend(acc, wsum, c)
	}
	return d.launch(kNormalizeBlend, plane, inout(acc), in(wsum), i32(c), i32(plane))
}

// ForegroundEstimate implements kernels.Kernels on the CPU: no device
// kernel yet (see above).
func (d *Device) ForegroundEstimate(dstF []float32, img []float32, alpha []float32, w, h int) error {
	return d.CPU.ForegroundEstimate(dstF, img, alpha, w, h)
}
