//go:build cuda

package cuda

import (
	"math/rand/v2"
	"testing"

	"github.com/falocal/falocal/kernels"
)

// Host-to-host: what a pipeline pays today for one operation through the
// Kernels interface (upload, kernel, download) against the CPU reference on
// the same machine, for background removal of a 4000x3000 photo: the photo
// to a 1024x1024 tensor, the 1024x1024 mask back to the photo's size, the
// RGBA composite. They decide whether the server should hand pipelines the
// device or the CPU for these operations.

const hostW, hostH = 4000, 3000

func hostPhoto() []uint8 {
	r := rand.New(rand.NewPCG(1, 2))
	img := make([]uint8, 3*hostW*hostH)
	for i := range img {
		img[i] = uint8(r.IntN(256))
	}
	return img
}

func hostMask(n int) []float32 {
	r := rand.New(rand.NewPCG(3, 4))
	m := make([]float32, n)
	for i := range m {
		m[i] = r.Float32()
	}
	return m
}

var (
	mean = [3]float32{0.5, 0.5, 0.5}
	std  = [3]float32{1, 1, 1}
)

func benchHost(b *testing.B, k kernels.Kernels, op string) {
	if k == kernels.Kernels(dev) {
		// The tests' NaN fill of outputs is not part of the real path.
		dev.poison = false
		defer func() { dev.poison = true }()
	}
	img := hostPhoto()
	switch op {
	case "ImageToTensor":
		dst := make([]float32, 3*1024*1024)
		b.SetBytes(int64(len(img) + 4*len(dst)))
		for b.Loop() {
			if err := k.ImageToTensor(dst, img, hostW, hostH, 3*hostW, 3, 1024, 1024, 255, mean, std); err != nil {
				b.Fatal(err)
			}
		}
	case "ResizeMask":
		src, dst := hostMask(1024*1024), make([]float32, hostW*hostH)
		b.SetBytes(int64(4 * (len(src) + len(dst))))
		for b.Loop() {
			if err := k.(kernels.Extended).ResizeMask(dst, hostW, hostH, src, 1024, 1024, 0, 1); err != nil {
				b.Fatal(err)
			}
		}
	case "ComposeAlpha":
		mask, dst := hostMask(hostW*hostH), make([]uint8, 4*hostW*hostH)
		b.SetBytes(int64(len(img) + 4*len(mask) + len(dst)))
		for b.Loop() {
			if err := k.ComposeAlpha(dst, img, hostW, hostH, 3*hostW, 3, mask); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkHostImageToTensorDevice(b *testing.B) { benchHost(b, dev, "ImageToTensor") }
func BenchmarkHostImageToTensorCPU(b *testing.B)    { benchHost(b, kernels.CPU{}, "ImageToTensor") }
func BenchmarkHostResizeMaskDevice(b *testing.B)    { benchHost(b, dev, "ResizeMask") }
func BenchmarkHostResizeMaskCPU(b *testing.B)       { benchHost(b, kernels.CPU{}, "ResizeMask") }
func BenchmarkHostComposeAlphaDevice(b *testing.B)  { benchHost(b, dev, "ComposeAlpha") }
func BenchmarkHostComposeAlphaCPU(b *testing.B)     { benchHost(b, kernels.CPU{}, "ComposeAlpha") }
