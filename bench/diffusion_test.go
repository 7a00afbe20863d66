package bench

import (
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/diffusion"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
)

// BenchmarkDiffusion generates with the tiny random-weight test models of
// each family (SD 1.5, SDXL, FLUX.1 schnell) at batch 1 and 4: per-step
// time, images per second, and the split between model time (text
// encoders, UNet/transformer, VAE) and the Go loop's own time (scheduler,
// guidance, packing, tensor copies). Tiny widths make model time small, so
// the Go share here is an upper bound of what it is with real weights.
func BenchmarkDiffusion(b *testing.B) {
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(b)})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		model string
		size  int
		steps int
		guid  float64
	}{{"sd15-tiny", 256, 8, 7.5}, {"sdxl-tiny", 256, 8, 5}, {"flux-schnell-tiny", 256, 4, 0}} {
		st, err := weights.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		files, err := st.AddDir(pipelinetest.ExpandDir(b, filepath.Join("..", "pipelines", "diffusion", "testdata", "models", c.model)), "fp32")
		if err != nil {
			b.Fatal(err)
		}
		man := weights.Manifest{Name: c.model, Pipeline: "diffusion", Files: files}
		if err := st.Put(man); err != nil {
			b.Fatal(err)
		}
		models := pipelines.NewModels(pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(), Config: pipelines.Config{
			SessionsPerModel: 1}, Session: threads(runtime.NumCPU())})
		m, err := diffusion.LoadModel(man, st, models)
		if err != nil {
			b.Fatal(err)
		}
		for _, batch := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/%dpx/batch=%d", c.model, c.size, batch), func(b *testing.B) {
				job := diffusion.Job{Prompt: "a red cube on a table", Negative: "blurry", Width: c.size, Height: c.size,
					Steps: c.steps, Guidance: c.guid, NumImages: batch}
				// one warm-up run loads the sessions
				job.Noise = diffusion.NewSeededNoise(1)
				if _, err := m.Generate(b.Context(), job); err != nil {
					b.Fatal(err)
				}
				m.ResetComponentTimes()
				var wall, denoise time.Duration
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					job.Noise = diffusion.NewSeededNoise(uint64(i))
					t0 := time.Now()
					res, err := m.Generate(b.Context(), job)
					if err != nil {
						b.Fatal(err)
					}
					wall += time.Since(t0)
					denoise += time.Duration(res.Timings["denoise"] * float64(time.Second))
				}
				ct := m.ComponentTimes()
				var model time.Duration
				for _, d := range ct {
					model += d
				}
				denoiser := ct["unet"] + ct["transformer"]
				n := float64(b.N)
				b.ReportMetric(denoise.Seconds()/n/float64(c.steps)*1000, "ms/step")
				b.ReportMetric(float64(batch)*n/wall.Seconds(), "images/s")
				b.ReportMetric(100*model.Seconds()/wall.Seconds(), "%model")
				b.ReportMetric(100*(denoise-denoiser).Seconds()/denoise.Seconds(), "%loop_in_denoise")
			})
		}
		models.Close()
	}
}
