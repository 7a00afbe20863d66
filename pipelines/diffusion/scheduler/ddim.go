package scheduler

import (
	"fmt"
	"math"
)

// ddim is DDIMScheduler (eta 0, the deterministic sampler) and, when lcm,
// LCMScheduler: both index alphas_cumprod by integer training timestep
// and have no sigmas.
type ddim struct {
	cfg       Config
	lcm       bool
	ac        []float32
	final     float32 // alpha_cumprod "before" timestep 0
	timesteps []int64
	n         int
}

func newDDIM(c Config) (*ddim, error) {
	if err := checkPrediction(c.PredictionType); err != nil {
		return nil, err
	}
	ac, err := alphasCumprod(c)
	if err != nil {
		return nil, err
	}
	d := &ddim{cfg: c, lcm: c.ClassName == ClassLCM, ac: ac, final: ac[0]}
	if c.SetAlphaToOne {
		d.final = 1
	}
	return d, nil
}

func (d *ddim) Config() Config { return d.cfg }

func (d *ddim) SetTimesteps(n int, opts Options) error {
	T := d.cfg.NumTrainTimesteps
	if n < 1 || n > T {
		return fmt.Errorf("scheduler: %d steps", n)
	}
	d.n = n
	d.timesteps = d.timesteps[:0]
	if d.lcm {
		return d.setLCM(n, opts)
	}
	ts, err := spacedTimesteps(d.cfg, n)
	if err != nil {
		return err
	}
	for _, t := range ts {
		d.timesteps = append(d.timesteps, int64(math.RoundToEven(t)))
	}
	return nil
}

// setLCM picks n of the original_inference_steps "skipping" timesteps
// the consistency model was distilled on, evenly from the top.
func (d *ddim) setLCM(n int, opts Options) error {
	orig := d.cfg.OriginalInferenceSteps
	strength := opts.LCMStrength
	if strength == 0 {
		strength = 1
	}
	if orig > d.cfg.NumTrainTimesteps || n > orig {
		return fmt.Errorf("scheduler: LCM %d steps with original_inference_steps %d", n, orig)
	}
	k := d.cfg.NumTrainTimesteps / orig
	m := int(float64(orig) * strength)
	if m/n < 1 {
		return fmt.Errorf("scheduler: LCM %d steps exceed the %d available at strength %g", n, m, strength)
	}
	// origin timesteps k*j - 1 for j = m..1 (descending).
	idx := npLinspace(0, float64(m), n, true)
	for _, x := range idx {
		j := m - int(math.Floor(x))
		d.timesteps = append(d.timesteps, int64(j*k-1))
	}
	return nil
}

func (d *ddim) Timesteps() []float64 {
	out := make([]float64, len(d.timesteps))
	for i, t := range d.timesteps {
		out[i] = float64(t)
	}
	return out
}

func (d *ddim) Sigmas() []float64                            { return nil }
func (d *ddim) InitNoiseSigma() float64                      { return 1 }
func (d *ddim) ScaleModelInput(s []float32, _ int) []float32 { return clone(s) }

func (d *ddim) alphaAt(t int64) float32 {
	if t >= 0 {
		return d.ac[t]
	}
	return d.final
}

// x0AndEps returns the predicted clean sample and noise.
func (d *ddim) x0AndEps(mo, x, sa, sb float32) (x0, eps float32) {
	switch d.cfg.PredictionType {
	case "epsilon":
		x0, eps = (x-float32(sb*mo))/sa, mo
	case "v_prediction":
		x0 = float32(sa*x) - float32(sb*mo)
		eps = float32(sa*mo) + float32(sb*x)
	default:
		x0, eps = mo, (x-float32(sa*mo))/sb
	}
	if d.cfg.ClipSample {
		r := float32(d.cfg.ClipSampleRange)
		x0 = min(max(x0, -r), r)
	}
	return x0, eps
}

func (d *ddim) Step(mo, sample []float32, i int, noise []float32) []float32 {
	checkLen("model output", mo, sample)
	t := d.timesteps[i]
	if d.lcm {
		return d.stepLCM(mo, sample, i, noise)
	}
	// DDIM's previous timestep is one stride back, not the schedule's
	// next entry (they differ for linspace and trailing spacing).
	prevT := t - int64(d.cfg.NumTrainTimesteps/d.n)
	at, ap := d.ac[t], d.alphaAt(prevT)
	sa, sb := f32sqrt(at), f32sqrt(1-at)
	dir := f32sqrt(1 - ap) // eta 0: no variance term
	sap := f32sqrt(ap)
	out := make([]float32, len(sample))
	for k, x := range sample {
		x0, eps := d.x0AndEps(mo[k], x, sa, sb)
		out[k] = float32(sap*x0) + float32(dir*eps)
	}
	return out
}

func (d *ddim) stepLCM(mo, sample []float32, i int, noise []float32) []float32 {
	t := d.timesteps[i]
	prevT := t
	if i+1 < len(d.timesteps) {
		prevT = d.timesteps[i+1]
	}
	at, ap := d.ac[t], d.alphaAt(prevT)
	sa, sb := f32sqrt(at), f32sqrt(1-at)
	// Consistency-model boundary condition (sigma_data 0.5).
	st := float32(t) * float32(d.cfg.TimestepScaling)
	den := float32(st*st) + 0.25
	cSkip := 0.25 / den
	cOut := st / f32sqrt(den)
	last := i == d.n-1
	if !last {
		checkLen("noise", noise, sample)
	}
	sap, sbp := f32sqrt(ap), f32sqrt(1-ap)
	out := make([]float32, len(sample))
	for k, x := range sample {
		x0, _ := d.x0AndEps(mo[k], x, sa, sb)
		den := float32(cOut*x0) + float32(cSkip*x)
		if last {
			out[k] = den
		} else {
			// Re-noise the denoised estimate to the next timestep.
			out[k] = float32(sap*den) + float32(sbp*noise[k])
		}
	}
	return out
}

func (d *ddim) AddNoise(original, noise []float32, i int) []float32 {
	checkLen("noise", noise, original)
	a := d.ac[d.timesteps[i]]
	sa, sb := f32sqrt(a), f32sqrt(1-a)
	out := make([]float32, len(original))
	for k, x := range original {
		out[k] = float32(sa*x) + float32(sb*noise[k])
	}
	return out
}

func (d *ddim) StartIndex(strength float64) int { return Img2ImgStart(len(d.timesteps), strength) }
