//go:build cgo

package weights

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/image/draw"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/weights/ncnn"
)

// minPSNR is, per model, the least PSNR (dB) against the real 256×192 photo
// crop that its 4×-reduced 64×48 version must be upscaled to. Measured with
// ONNX Runtime 1.30 CPU: x4plus 25.5, x4fast 26.6, animevideov3 x4 27.2,
// x3 28.3, x2 29.4, x4plus-anime 25.2 (bicubic: 28.3 at ×4). The same
// compact models with every 3×3 kernel transposed score 23.5–24.1, with
// input/output channels swapped below 0; RRDB models with swapped channels
// score under 12. (Transposing every kernel of an RRDBNet only mirrors the
// image through the network, so no photograph can catch that one.)
var minPSNR = map[string]float64{
	"realesrgan-x4plus":       24.5,
	"realesrgan-x4fast":       25.5,
	"realesr-animevideov3-x4": 26,
	"realesr-animevideov3-x3": 27,
	"realesr-animevideov3-x2": 28,
	"realesrgan-x4plus-anime": 24,
}

// photo is a ground-truth crop and its 4×4 box-averaged low-resolution copy.
type photo struct {
	hr   *image.RGBA // 256×192
	lr   *image.RGBA // 64×48
	lrIn []float32   // lr as NCHW RGB in [0,1]
}

func loadPhoto(t *testing.T) photo {
	t.Helper()
	f, err := os.Open(testenv.Asset(t, "chelsea.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	var p photo
	p.hr = image.NewRGBA(image.Rect(0, 0, 256, 192)) // the cat's left eye and fur
	draw.Draw(p.hr, p.hr.Bounds(), img, image.Pt(100, 60), draw.Src)
	p.lr = image.NewRGBA(image.Rect(0, 0, 64, 48))
	for y := 0; y < 48; y++ {
		for x := 0; x < 64; x++ {
			for c := 0; c < 4; c++ {
				s := 0
				for dy := 0; dy < 4; dy++ {
					for dx := 0; dx < 4; dx++ {
						s += int(p.hr.Pix[p.hr.PixOffset(4*x+dx, 4*y+dy)+c])
					}
				}
				p.lr.Pix[p.lr.PixOffset(x, y)+c] = uint8((s + 8) / 16)
			}
		}
	}
	p.lrIn = planar(p.lr)
	return p
}

func planar(img *image.RGBA) []float32 {
	w, h := img.Bounds().Dx(), img.Bounds().Dy()
	out := make([]float32, 3*w*h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			o := img.PixOffset(x, y)
			for c := 0; c < 3; c++ {
				out[c*w*h+y*w+x] = float32(img.Pix[o+c]) / 255
			}
		}
	}
	return out
}

func resized(src *image.RGBA, w, h int, k draw.Interpolator) []float32 {
	if src.Bounds().Dx() == w && src.Bounds().Dy() == h {
		return planar(src)
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	k.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Src, nil)
	return planar(dst)
}

func psnr(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		s += d * d
	}
	return 10 * math.Log10(float64(len(a))/s)
}

// boxDown averages s×s blocks of a planar 3×(h·s)×(w·s) image.
func boxDown(x []float32, w, h, s int) []float32 {
	out := make([]float32, 3*w*h)
	W, H := w*s, h*s
	for c := 0; c < 3; c++ {
		for y := 0; y < h; y++ {
			for xx := 0; xx < w; xx++ {
				var sum float32
				for dy := 0; dy < s; dy++ {
					for dx := 0; dx < s; dx++ {
						sum += x[c*W*H+(y*s+dy)*W+xx*s+dx]
					}
				}
				out[c*w*h+y*w+xx] = sum / float32(s*s)
			}
		}
	}
	return out
}

func mean(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v)
	}
	return s / float64(len(x))
}

// upscale runs an ONNX model on the photo and returns its output and the
// output's PSNR against the ground truth at that scale.
func upscale(t *testing.T, rt engine.Runtime, path string, scale int, p photo) ([]float32, float64, time.Duration) {
	t.Helper()
	s, err := rt.Open(context.Background(), engine.SessionSpec{Path: path,
		Inputs: []string{"input"}, Outputs: []string{"output"}, Providers: []engine.Provider{engine.CPU}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x, _ := engine.NewFloat32(append([]float32(nil), p.lrIn...), 1, 3, 48, 64)
	start := time.Now()
	out, err := s.Run(context.Background(), []*engine.Tensor{x}, nil)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	y := out[0]
	if want := []int64{1, 3, int64(48 * scale), int64(64 * scale)}; len(y.Shape) != 4 || y.Shape[0] != want[0] ||
		y.Shape[1] != want[1] || y.Shape[2] != want[2] || y.Shape[3] != want[3] {
		t.Fatalf("%s: output shape %v, want %v", filepath.Base(path), y.Shape, want)
	}
	return y.F32, psnr(y.F32, resized(p.hr, 64*scale, 48*scale, draw.CatmullRom)), took
}

func runUpscalers(t *testing.T, s *Store, sources map[string][2][]byte) {
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	p := loadPhoto(t)
	lrMean := mean(p.lrIn)
	for _, r := range upscaleRecipes() {
		m, err := s.Get(r.Name)
		if err != nil {
			t.Fatal(err)
		}
		path, err := s.Path(m, "model")
		if err != nil {
			t.Fatal(err)
		}
		sc := ncnnModels[r.Name].scale
		y, got, took := upscale(t, rt, path, sc, p)
		bic := psnr(resized(p.lr, 64*sc, 48*sc, draw.CatmullRom), resized(p.hr, 64*sc, 48*sc, draw.CatmullRom))
		t.Logf("%s: 64×48 → ×%d in %v, PSNR %.2f dB against the photo (bicubic %.2f)", r.Name, sc, took.Round(time.Millisecond), got, bic)
		if got < minPSNR[r.Name] {
			t.Errorf("%s: PSNR %.2f dB, want ≥ %.1f", r.Name, got, minPSNR[r.Name])
		}
		lo, hi := float32(math.Inf(1)), float32(math.Inf(-1))
		for _, v := range y {
			lo, hi = min(lo, v), max(hi, v)
		}
		if !(lo > -0.5 && hi < 1.5) || math.Abs(mean(y)-lrMean) > 0.03 {
			t.Errorf("%s: output in [%.3f, %.3f], mean %.3f (input mean %.3f)", r.Name, lo, hi, mean(y), lrMean)
		}
		// Reduced back to 64×48 the output must be the input again.
		if c := psnr(boxDown(y, 64, 48, sc), p.lrIn); c < 28 {
			t.Errorf("%s: reduced output differs from the input: PSNR %.2f dB", r.Name, c)
		}
	}

	// The checks above catch mis-ordered weights: the same models with every
	// kernel transposed (OIWH read as OIHW) fall below their floors.
	for _, name := range []string{"realesrgan-x4fast", "realesr-animevideov3-x4"} {
		src := sources[name]
		g, err := ncnn.Load(bytes.NewReader(src[0]), src[1])
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range g.Layers {
			for _, w := range l.Weights {
				if w.Role != "weight" || w.Shape[2] != w.Shape[3] {
					continue
				}
				k := int(w.Shape[2])
				for o := 0; o < len(w.Data); o += k * k {
					for i := 0; i < k; i++ {
						for j := i + 1; j < k; j++ {
							w.Data[o+i*k+j], w.Data[o+j*k+i] = w.Data[o+j*k+i], w.Data[o+i*k+j]
						}
					}
				}
			}
		}
		b, _, err := ncnn.ToONNX(g, ncnn.Options{})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), name+"-transposed.onnx")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		_, got, _ := upscale(t, rt, path, ncnnModels[name].scale, p)
		t.Logf("%s with transposed kernels: PSNR %.2f dB", name, got)
		if got >= minPSNR[name] {
			t.Errorf("%s with transposed kernels passes the quality floor (%.2f dB ≥ %.1f)", name, got, minPSNR[name])
		}
	}
}
