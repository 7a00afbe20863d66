package diffusion

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/falocal/falocal/pipelines/diffusion/scheduler"
)

// Job is one validated generation request.
type Job struct {
	Prompt, Negative string
	// NegativeSet tells a negative prompt, empty or not, from none
	// (diffusers' None): without one, SDXL zeroes the unconditional
	// embeddings; with one, even "", the prompt is encoded.
	NegativeSet   bool
	Width, Height int
	Steps         int
	// Guidance is the classifier-free guidance scale for SD/SDXL (≤ 1 turns
	// it off) and the distilled guidance input of FLUX dev.
	Guidance  float64
	NumImages int
	// Scheduler overrides the model's scheduler class (diffusers name).
	Scheduler string
	// Init and Strength make an image-to-image job: Init is NCHW in
	// [-1, 1] at Width×Height; Mask (H×W, 1 = repaint) makes it inpainting.
	Init     []float32
	Strength float64
	Mask     []float32
	// Noise supplies every Gaussian draw, in the order diffusers draws them.
	Noise Noise
	// Progress is told after every denoising step.
	Progress func(step, total int)
	// Preview, when set, gets the current latents decoded after every step
	// (for fal.stream's progressive outputs; a VAE decode per step).
	Preview func(step, total int, images [][]float32)
	// StepLatents, when set, sees the latents after every step (tests
	// compare them with the reference's; previews could decode them).
	StepLatents func(step int, latents []float32)
	fluxTrace   *fluxTrace // tests: observes a FLUX run
}

// Noise draws standard normal values.
type Noise interface {
	Normal(n int) []float32
}

// SeededNoise is the server's noise: the same seed gives the same values on
// every run and machine (a PCG stream through Box–Muller; the values cannot
// match torch's generator, so images differ from diffusers' for the same seed).
type SeededNoise struct{ r *rand.Rand }

// NewSeededNoise starts a noise stream.
func NewSeededNoise(seed uint64) *SeededNoise {
	return &SeededNoise{rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))}
}

// Normal returns n draws.
func (s *SeededNoise) Normal(n int) []float32 {
	out := make([]float32, n)
	for i := 0; i < n; i += 2 {
		u1 := 1 - s.r.Float64() // (0, 1]
		u2 := s.r.Float64()
		r := math.Sqrt(-2 * math.Log(u1))
		out[i] = float32(r * math.Cos(2*math.Pi*u2))
		if i+1 < n {
			out[i+1] = float32(r * math.Sin(2*math.Pi*u2))
		}
	}
	return out
}

// Result is a finished job: images as NHWC float32 in [0, 1].
type Result struct {
	Images  [][]float32
	Width   int
	Height  int
	Timings map[string]float64 // seconds: text, denoise, vae
}

// Generate runs a job on the model's family.
func (m *Model) Generate(ctx context.Context, j Job) (*Result, error) {
	if j.NumImages < 1 {
		j.NumImages = 1
	}
	if j.Noise == nil {
		return nil, fmt.Errorf("diffusion: job without a noise source")
	}
	switch m.Family {
	case SD, SDXL:
		return m.generateSD(ctx, j)
	case Flux:
		return m.generateFlux(ctx, j)
	}
	return nil, fmt.Errorf("diffusion: unknown family %q", m.Family)
}

// newScheduler builds the job's scheduler from the model's config.
// A class suffixed "+karras" also turns on Karras sigmas.
func (m *Model) newScheduler(class string) (scheduler.Scheduler, error) {
	cfg := m.SchedulerConfig
	if c, ok := strings.CutSuffix(class, "+karras"); ok {
		raw := map[string]json.RawMessage{}
		if err := json.Unmarshal(scheduler.PythonJSON(cfg), &raw); err != nil {
			return nil, fmt.Errorf("scheduler config: %w", err)
		}
		raw["use_karras_sigmas"] = json.RawMessage("true")
		b, err := json.Marshal(raw)
		if err != nil {
			return nil, err
		}
		cfg, class = b, c
	}
	s, err := scheduler.FromJSON(cfg, class)
	if err != nil && class == "" {
		// the export ships a scheduler this package does not have (SD 1.5's
		// PNDM): Euler with the same betas and spacing, as fal's endpoints
		// let users choose among these anyway
		return scheduler.FromJSON(cfg, scheduler.ClassEuler)
	}
	return s, err
}

// since returns seconds elapsed.
func since(t time.Time) float64 { return time.Since(t).Seconds() }

// preview decodes unpacked latents for Job.Preview.
func (m *Model) preview(ctx context.Context, j Job, step, total int, latents []float32, n, h, w int) error {
	if j.Preview == nil {
		return nil
	}
	imgs, err := m.decode(ctx, latents, n, h, w)
	if err != nil {
		return err
	}
	j.Preview(step, total, imgs)
	return nil
}
