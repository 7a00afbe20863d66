package scheduler

import (
	"fmt"
	"math"
)

// flow is FlowMatchEulerDiscreteScheduler as FluxPipeline drives it:
// sigmas passed in (np.linspace(1, 1/n, n) by default), shifted statically
// or by mu, then plain Euler on the velocity.
type flow struct {
	cfg       Config
	timesteps []float32
	sigmas    []float32
}

func newFlow(c Config) (*flow, error) {
	if c.TimeShiftType != "exponential" && c.TimeShiftType != "linear" {
		return nil, fmt.Errorf("scheduler: time_shift_type %q not supported", c.TimeShiftType)
	}
	if c.UseKarrasSigmas {
		return nil, fmt.Errorf("scheduler: flow matching with Karras sigmas not supported")
	}
	return &flow{cfg: c}, nil
}

func (f *flow) Config() Config { return f.cfg }

func (f *flow) SetTimesteps(n int, opts Options) error {
	if n < 1 {
		return fmt.Errorf("scheduler: %d steps", n)
	}
	in := opts.FlowSigmas
	if in == nil {
		in = npLinspace(1, 1/float64(n), n, false)
	}
	// The shifts run in float32: numpy keeps float32 arrays float32 when
	// combined with Python scalars.
	sig := make([]float32, len(in)+1)
	if f.cfg.UseDynamicShifting {
		mu := 0.0
		switch {
		case opts.Mu != nil:
			mu = *opts.Mu
		case opts.ImageSeqLen > 0:
			mu = CalculateShift(opts.ImageSeqLen, f.cfg)
		default:
			return fmt.Errorf("scheduler: dynamic shifting needs mu or the image sequence length")
		}
		em := float32(mu)
		if f.cfg.TimeShiftType == "exponential" {
			em = float32(math.Exp(mu))
		}
		for i, s := range in {
			// time_shift(mu, 1, t) = e^mu / (e^mu + (1/t - 1)^1)
			sig[i] = em / (em + (1/float32(s) - 1))
		}
	} else {
		shift := float32(f.cfg.Shift)
		shift1 := float32(f.cfg.Shift - 1)
		for i, s := range in {
			t := float32(s)
			sig[i] = float32(shift*t) / (1 + float32(shift1*t))
		}
	}
	f.sigmas = sig
	f.timesteps = make([]float32, len(in))
	T := float32(f.cfg.NumTrainTimesteps)
	for i := range in {
		f.timesteps[i] = sig[i] * T
	}
	return nil
}

func (f *flow) Timesteps() []float64                         { return to64(f.timesteps) }
func (f *flow) Sigmas() []float64                            { return to64(f.sigmas) }
func (f *flow) InitNoiseSigma() float64                      { return 1 }
func (f *flow) ScaleModelInput(s []float32, _ int) []float32 { return clone(s) }

func (f *flow) Step(mo, sample []float32, i int, _ []float32) []float32 {
	checkLen("model output", mo, sample)
	dt := f.sigmas[i+1] - f.sigmas[i]
	out := make([]float32, len(sample))
	for k, x := range sample {
		out[k] = x + float32(dt*mo[k])
	}
	return out
}

// AddNoise is scale_noise: the straight path between data and noise.
func (f *flow) AddNoise(original, noise []float32, i int) []float32 {
	checkLen("noise", noise, original)
	s := f.sigmas[i]
	out := make([]float32, len(original))
	for k, x := range original {
		out[k] = float32(s*noise[k]) + float32((1-s)*x)
	}
	return out
}

func (f *flow) StartIndex(strength float64) int {
	return FluxImg2ImgStart(len(f.timesteps), strength)
}
