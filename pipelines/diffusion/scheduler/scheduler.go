package scheduler

import (
	"fmt"
	"math"
)

// Scheduler is one diffusers scheduler. Step indices are absolute positions
// in Timesteps(); for img2img start the loop at StartIndex.
//
// Typical loop:
//
//	s.SetTimesteps(n, opts)
//	x := noise scaled by s.InitNoiseSigma()  (or s.AddNoise for img2img)
//	for i := start; i < len(s.Timesteps()); i++ {
//		out := model(s.ScaleModelInput(x, i), s.Timesteps()[i])
//		x = s.Step(out, x, i, freshNoise) // noise only read by ancestral/LCM
//	}
//
// Steps must run in order after SetTimesteps: DPM++ 2M keeps the previous
// model output.
type Scheduler interface {
	Config() Config
	// SetTimesteps prepares n inference steps.
	SetTimesteps(n int, opts Options) error
	// Timesteps are the model's timestep inputs, one per step.
	Timesteps() []float64
	// Sigmas has len(Timesteps())+1 entries (the last is the final sigma);
	// nil for DDIM and LCM, which have none.
	Sigmas() []float64
	// InitNoiseSigma scales the initial Gaussian noise of text-to-image.
	InitNoiseSigma() float64
	// ScaleModelInput returns the model input for step i (a new slice).
	ScaleModelInput(sample []float32, i int) []float32
	// Step returns the sample after step i. noise must have len(sample)
	// values for EulerAncestral and LCM (not after LCM's last step); the
	// others ignore it.
	Step(modelOutput, sample []float32, i int, noise []float32) []float32
	// AddNoise noises img2img latents to the level of step i (diffusers'
	// add_noise, or scale_noise for flow matching).
	AddNoise(original, noise []float32, i int) []float32
	// StartIndex is the first step of img2img at this strength, as
	// diffusers' img2img pipelines choose it for the current steps.
	StartIndex(strength float64) int
}

// Options are the set_timesteps arguments beyond the step count.
type Options struct {
	// Mu is the FLUX dynamic shift. When nil and the config uses dynamic
	// shifting, it is computed from ImageSeqLen as FluxPipeline does.
	Mu          *float64
	ImageSeqLen int
	// FlowSigmas replaces the FLUX sigmas (default np.linspace(1, 1/n, n)).
	FlowSigmas []float64
	// LCMStrength is LCMScheduler.set_timesteps' strength (0 means 1).
	LCMStrength float64
}

// CalculateShift is FluxPipeline's calculate_shift: mu grows linearly with
// the image's token count between the config's two anchors.
func CalculateShift(imageSeqLen int, c Config) float64 {
	m := (c.MaxShift - c.BaseShift) / float64(c.MaxImageSeqLen-c.BaseImageSeqLen)
	b := c.BaseShift - float64(m*float64(c.BaseImageSeqLen))
	return float64(float64(imageSeqLen)*m) + b
}

// Img2ImgStart is StableDiffusionImg2ImgPipeline.get_timesteps: the index
// of the first step that runs at this strength.
func Img2ImgStart(n int, strength float64) int {
	initT := min(int(float64(n)*strength), n)
	return max(n-initT, 0)
}

// FluxImg2ImgStart is FluxImg2ImgPipeline.get_timesteps, which truncates
// only after subtracting (no int() around n*strength).
func FluxImg2ImgStart(n int, strength float64) int {
	initT := math.Min(float64(n)*strength, float64(n))
	return int(math.Max(float64(n)-initT, 0))
}

func checkLen(what string, a, b []float32) {
	if len(a) != len(b) {
		panic(fmt.Sprintf("scheduler: %s has %d values, sample %d", what, len(a), len(b)))
	}
}

// f32sqrt is torch's float32 sqrt (x ** 0.5): correctly rounded, and so is
// sqrt in float64 rounded to float32.
func f32sqrt(x float32) float32 { return float32(math.Sqrt(float64(x))) }

func f32log(x float32) float32 { return float32(math.Log(float64(x))) }

func f32exp(x float32) float32 { return float32(math.Exp(float64(x))) }

func to64(a []float32) []float64 {
	out := make([]float64, len(a))
	for i, v := range a {
		out[i] = float64(v)
	}
	return out
}

func clone(a []float32) []float32 { return append([]float32(nil), a...) }
