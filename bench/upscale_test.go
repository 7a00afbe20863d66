package bench

import (
	"context"
	"image"
	"image/draw"
	"image/png"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/upscale"
	"github.com/falocal/falocal/weights"
)

// BenchmarkUpscale times a ×4 upscale of astronaut.png (512×512 → 2048²)
// with RealESRGAN_x4_v3 (realesrgan-x4fast) and RealESRGAN_x4plus two ways:
// our engine (ONNX Runtime, the converted model) tiled as the pipeline
// tiles a 512² image by default (x4fast: one 512² window, x4plus: 171² tiles
// in 191² windows; 10 px of context), from decoded pixels to the 2048²
// image; and realesrgan-ncnn-vulkan on the same PNG, the whole process run
// (start, Vulkan set-up, PNG decode and encode) timed, on whatever Vulkan
// device 0 is (lavapipe on a machine without a GPU). Reported as output
// megapixels per second.
func BenchmarkUpscale(b *testing.B) {
	const side = 512
	in := testenv.Asset(b, "astronaut.png")
	f, err := os.Open(in)
	if err != nil {
		b.Fatal(err)
	}
	src, err := png.Decode(f)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	if r := src.Bounds(); r.Dx() != side || r.Dy() != side {
		b.Fatalf("astronaut.png is %dx%d, want %d²", r.Dx(), r.Dy(), side)
	}
	img := image.NewNRGBA(image.Rect(0, 0, side, side))
	draw.Draw(img, img.Bounds(), src, src.Bounds().Min, draw.Src)
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(b)})
	if err != nil {
		b.Fatal(err)
	}
	store, err := weights.Open(testenv.DataDir(b))
	if err != nil {
		b.Fatal(err)
	}
	outMpx := float64(4*side*4*side) / 1e6
	for _, c := range []struct {
		model string
		tile  int
	}{{"realesrgan-x4fast", 512}, {"realesrgan-x4plus", 171}} { // the pipeline's automatic tiles for 512²
		b.Run(c.model+"/engine", func(b *testing.B) {
			m, err := store.Get(c.model)
			if err != nil {
				b.Fatal(err)
			}
			path, err := store.Path(m, "model")
			if err != nil {
				b.Fatal(err)
			}
			s, err := rt.Open(context.Background(), engine.SessionSpec{Path: path, Inputs: []string{"input"},
				Outputs: []string{"output"}, Providers: []engine.Provider{engine.CPU}, IntraOpThreads: runtime.NumCPU()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			req := &pipelines.Request{ID: "bench"}
			var took time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if _, err := upscale.Upscale(context.Background(), req, sessionRunner{s}, 4, 10, c.tile, img, 4*side, 4*side); err != nil {
					b.Fatal(err)
				}
				took += time.Since(t0)
			}
			b.ReportMetric(outMpx*float64(b.N)/took.Seconds(), "Mpx/s")
		})
		b.Run(c.model+"/ncnn", func(b *testing.B) {
			bin, models := testenv.NCNN(b, weights.UpscalePackages())
			b.ResetTimer()
			var took time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				out := testenv.RunNCNN(b, bin, models, c.model, in)
				took += time.Since(t0)
				os.Remove(out)
				os.Remove(filepath.Dir(out))
			}
			b.ReportMetric(outMpx*float64(b.N)/took.Seconds(), "Mpx/s")
		})
	}
}
