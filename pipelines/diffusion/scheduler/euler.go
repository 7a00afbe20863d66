package scheduler

import "fmt"

// euler is EulerDiscreteScheduler and, when ancestral, the
// EulerAncestralDiscreteScheduler (k-diffusion's Euler and Euler a).
type euler struct {
	cfg       Config
	ancestral bool
	ac        []float32
	train     []float32 // training sigmas, ascending
	timesteps []float32
	sigmas    []float32
}

func newEuler(c Config) (*euler, error) {
	ac, err := alphasCumprod(c)
	if err != nil {
		return nil, err
	}
	if c.InterpolationType != "linear" {
		return nil, fmt.Errorf("scheduler: interpolation_type %q not supported", c.InterpolationType)
	}
	if err := checkPrediction(c.PredictionType); err != nil {
		return nil, err
	}
	return &euler{cfg: c, ancestral: c.ClassName == ClassEulerAncestral, ac: ac, train: trainSigmas(ac)}, nil
}

func checkPrediction(p string) error {
	switch p {
	case "epsilon", "v_prediction", "sample":
		return nil
	}
	return fmt.Errorf("scheduler: prediction_type %q not supported", p)
}

func (e *euler) Config() Config { return e.cfg }

func (e *euler) SetTimesteps(n int, _ Options) error {
	if n < 1 {
		return fmt.Errorf("scheduler: %d steps", n)
	}
	ts, err := spacedTimesteps(e.cfg, n)
	if err != nil {
		return err
	}
	// diffusers casts the spaced timesteps to float32 before
	// interpolating sigmas at them.
	t32 := make([]float32, len(ts))
	sig := make([]float64, len(ts))
	for i, t := range ts {
		t32[i] = float32(t)
		sig[i] = npInterp(float64(t32[i]), e.train)
	}
	if e.cfg.UseKarrasSigmas && !e.ancestral {
		lo, hi := sig[len(sig)-1], sig[0]
		if e.cfg.SigmaMin != nil {
			lo = *e.cfg.SigmaMin
		}
		if e.cfg.SigmaMax != nil {
			hi = *e.cfg.SigmaMax
		}
		sig = karras(lo, hi, n)
		logs := logSigmas(e.train)
		for i, s := range sig {
			t32[i] = float32(sigmaToT(s, logs))
		}
	}
	e.timesteps = t32
	e.sigmas = make([]float32, len(sig)+1)
	for i, s := range sig {
		e.sigmas[i] = float32(s)
	}
	if e.cfg.FinalSigmasType == "sigma_min" && !e.ancestral {
		e.sigmas[len(sig)] = e.train[0]
	}
	return nil
}

func (e *euler) Timesteps() []float64 { return to64(e.timesteps) }
func (e *euler) Sigmas() []float64    { return to64(e.sigmas) }

func (e *euler) InitNoiseSigma() float64 {
	m := float32(0)
	for _, s := range e.sigmas {
		m = max(m, s)
	}
	if e.cfg.TimestepSpacing == "linspace" || e.cfg.TimestepSpacing == "trailing" {
		return float64(m)
	}
	return float64(f32sqrt(m*m + 1))
}

// ScaleModelInput divides by sqrt(sigma^2 + 1): the model was trained on
// unit-variance inputs of the variance-preserving process.
func (e *euler) ScaleModelInput(sample []float32, i int) []float32 {
	s := e.sigmas[i]
	d := f32sqrt(float32(s*s) + 1)
	out := make([]float32, len(sample))
	for k, x := range sample {
		out[k] = x / d
	}
	return out
}

// predX0 is the denoised estimate at sigma.
func (e *euler) predX0(mo, x, sigma float32) float32 {
	switch e.cfg.PredictionType {
	case "epsilon":
		return x - float32(sigma*mo)
	case "v_prediction":
		s2 := float32(sigma*sigma) + 1
		c := -sigma / f32sqrt(s2)
		return float32(mo*c) + x/s2
	}
	return mo
}

func (e *euler) Step(mo, sample []float32, i int, noise []float32) []float32 {
	checkLen("model output", mo, sample)
	sigma, next := e.sigmas[i], e.sigmas[i+1]
	out := make([]float32, len(sample))
	if !e.ancestral {
		// s_churn is 0 as in every SD pipeline, so sigma_hat == sigma.
		dt := next - sigma
		for k, x := range sample {
			d := (x - e.predX0(mo[k], x, sigma)) / sigma
			out[k] = x + float32(d*dt)
		}
		return out
	}
	checkLen("noise", noise, sample)
	// Step deterministically down to sigmaDown, then add fresh noise of
	// sigmaUp so the total variance lands on the next sigma.
	to2 := float32(next * next)
	up := f32sqrt(float32(to2*(float32(sigma*sigma)-to2)) / float32(sigma*sigma))
	down := f32sqrt(to2 - float32(up*up))
	dt := down - sigma
	for k, x := range sample {
		d := (x - e.predX0(mo[k], x, sigma)) / sigma
		p := x + float32(d*dt)
		out[k] = p + float32(noise[k]*up)
	}
	return out
}

func (e *euler) AddNoise(original, noise []float32, i int) []float32 {
	checkLen("noise", noise, original)
	s := e.sigmas[i]
	out := make([]float32, len(original))
	for k, x := range original {
		out[k] = x + float32(noise[k]*s)
	}
	return out
}

func (e *euler) StartIndex(strength float64) int { return Img2ImgStart(len(e.timesteps), strength) }
