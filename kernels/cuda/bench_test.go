//go:build cuda

package cuda

import (
	"testing"

	"gorgonia.org/cu"
)

// Device-resident throughput: each benchmark reports bytes read plus bytes
// written per op (b.SetBytes), so bench/gpu/check.sh can set every kernel's
// achieved bandwidth against a plain device-to-device copy's.

const benchElems = 64 << 20 // 64 Mi elements: large enough to saturate HBM

func benchBuffers(b *testing.B, sizes ...int64) []*Buffer {
	b.Helper()
	var bufs []*Buffer
	for _, s := range sizes {
		buf, err := dev.Alloc(s)
		if err != nil {
			b.Fatal(err)
		}
		// Never time on zeros: 0x3F bytes are 0.747 in float32, 1.81 in
		// float16 and 63 in uint8.
		if err := dev.do(func() error { return cu.MemsetD8(buf.ptr, 0x3F, s) }); err != nil {
			b.Fatal(err)
		}
		bufs = append(bufs, buf)
	}
	b.Cleanup(func() {
		for _, buf := range bufs {
			buf.Free()
		}
	})
	return bufs
}

// BenchmarkDtoDCopy is the reference: cuMemcpyDtoD of 256 MiB.
func BenchmarkDtoDCopy(b *testing.B) {
	const n = 4 * benchElems
	bufs := benchBuffers(b, n, n)
	b.SetBytes(2 * n)
	for i := 0; i < b.N; i++ {
		err := dev.do(func() error {
			if err := cu.MemcpyDtoD(bufs[1].ptr, bufs[0].ptr, n); err != nil {
				return err
			}
			return cu.Synchronize()
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// benchKernel times a one-thread-per-element kernel over benchElems.
func benchKernel(b *testing.B, name string, bytes int64, a ...arg) {
	b.Helper()
	benchLaunch(b, name, benchElems, bytes, a...)
}

// benchLaunch times kernel name over n threads; bytes is what one launch
// must read and write at the least.
func benchLaunch(b *testing.B, name string, n int, bytes int64, a ...arg) {
	b.Helper()
	if !dev.HasKernel(name) {
		b.Skipf("%s not loaded", name)
	}
	b.SetBytes(bytes)
	for i := 0; i < b.N; i++ {
		if err := dev.launch(name, n, a...); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkF32ToF16(b *testing.B) {
	bufs := benchBuffers(b, 4*benchElems, 2*benchElems)
	benchLaunch(b, kF32ToF16, convertThreads(benchElems), 6*benchElems, ptr(bufs[1]), ptr(bufs[0]), i32(benchElems))
}

func BenchmarkF16ToF32(b *testing.B) {
	bufs := benchBuffers(b, 2*benchElems, 4*benchElems)
	benchLaunch(b, kF16ToF32, convertThreads(benchElems), 6*benchElems, ptr(bufs[1]), ptr(bufs[0]), i32(benchElems))
}

// BenchmarkGuidance is classifier-free guidance: two reads, one write.
func BenchmarkGuidance(b *testing.B) {
	bufs := benchBuffers(b, 4*benchElems, 4*benchElems, 4*benchElems)
	benchKernel(b, kGuidance, 12*benchElems, ptr(bufs[2]), ptr(bufs[0]), ptr(bufs[1]), f32(7.5), i32(benchElems))
}

// BenchmarkAxpby is a three-term scheduler step: three reads, one write.
func BenchmarkAxpby(b *testing.B) {
	bufs := benchBuffers(b, 4*benchElems, 4*benchElems, 4*benchElems, 4*benchElems)
	benchKernel(b, kAxpby, 16*benchElems,
		ptr(bufs[3]), ptr(bufs[0]), f32(0.9), ptr(bufs[1]), f32(0.1), ptr(bufs[2]), f32(-0.05), i32(benchElems))
}

// Image kernels over an 8192x8192 RGB frame (64 Mi pixels) at its own size:
// one read of each uint8 pixel, one write of each output element.
const benchSide = 8192

func benchImageToTensor(b *testing.B, name string, outSize int64) {
	const px = benchSide * benchSide
	bufs := benchBuffers(b, 3*px, 3*outSize*px)
	a := []arg{ptr(bufs[1]), ptr(bufs[0]), i32(benchSide), i32(benchSide), i32(3 * benchSide), i32(3),
		i32(benchSide), i32(benchSide), f32(1.0 / 255), f32(0.5), f32(0.5), f32(0.5), f32(0.25), f32(0.25), f32(0.25)}
	benchLaunch(b, name, strideThreads(px/2, benchSide/2), 3*px+3*outSize*px, a...) // pixel pairs
}

func BenchmarkImageToTensor(b *testing.B)    { benchImageToTensor(b, kImageToTensor, 4) }
func BenchmarkImageToTensorF16(b *testing.B) { benchImageToTensor(b, kImageToTensorF16, 2) }

// BenchmarkComposeAlpha reads RGB and a float mask, writes RGBA.
func BenchmarkComposeAlpha(b *testing.B) {
	const px = benchSide * benchSide
	bufs := benchBuffers(b, 3*px, 4*px, 4*px)
	benchLaunch(b, kComposeAlpha, composeThreads(px), 3*px+4*px+4*px,
		ptr(bufs[2]), ptr(bufs[0]), i32(benchSide), i32(benchSide), i32(3*benchSide), i32(3), ptr(bufs[1]))
}
