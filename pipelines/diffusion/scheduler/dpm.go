package scheduler

import (
	"fmt"
	"math"
)

// dpm is DPMSolverMultistepScheduler as "DPM++ 2M": data-prediction
// (dpmsolver++) multistep solver of order 2.
type dpm struct {
	cfg       Config
	ac        []float32
	train     []float32
	timesteps []int64
	sigmas    []float32

	prevX0 []float32 // converted model output of the previous step
	done   int       // steps taken since SetTimesteps (lower_order_nums)
}

func newDPM(c Config) (*dpm, error) {
	if c.AlgorithmType != "dpmsolver++" {
		return nil, fmt.Errorf("scheduler: DPM-Solver algorithm_type %q not supported", c.AlgorithmType)
	}
	if c.SolverOrder < 1 || c.SolverOrder > 2 {
		return nil, fmt.Errorf("scheduler: DPM-Solver solver_order %d not supported", c.SolverOrder)
	}
	if c.SolverType != "midpoint" && c.SolverType != "heun" {
		return nil, fmt.Errorf("scheduler: DPM-Solver solver_type %q not supported", c.SolverType)
	}
	if err := checkPrediction(c.PredictionType); err != nil {
		return nil, err
	}
	ac, err := alphasCumprod(c)
	if err != nil {
		return nil, err
	}
	return &dpm{cfg: c, ac: ac, train: trainSigmas(ac)}, nil
}

func (d *dpm) Config() Config { return d.cfg }

// lastTimestep honours lambda_min_clipped: training steps whose
// log-SNR lies below it are never sampled.
func (d *dpm) lastTimestep() int {
	T := d.cfg.NumTrainTimesteps
	if math.IsInf(d.cfg.LambdaMinClipped, -1) {
		return T
	}
	// searchsorted (left) on lambda_t flipped to ascending order.
	clipped := 0
	for j := len(d.ac) - 1; j >= 0; j-- {
		a := d.ac[j]
		l := f32log(f32sqrt(a)) - f32log(f32sqrt(1-a))
		if float64(l) >= d.cfg.LambdaMinClipped {
			break
		}
		clipped++
	}
	return T - clipped
}

func (d *dpm) SetTimesteps(n int, _ Options) error {
	if n < 1 {
		return fmt.Errorf("scheduler: %d steps", n)
	}
	last := d.lastTimestep()
	var ts []int64
	switch d.cfg.TimestepSpacing {
	case "linspace":
		ls := npLinspace(0, float64(last-1), n+1, false)
		for i := n; i >= 1; i-- {
			ts = append(ts, int64(math.RoundToEven(ls[i])))
		}
	case "leading":
		ratio := last / (n + 1)
		for i := n; i >= 1; i-- {
			ts = append(ts, int64(i*ratio+d.cfg.StepsOffset))
		}
	case "trailing":
		for _, v := range npArangeDown(float64(last), float64(d.cfg.NumTrainTimesteps)/float64(n)) {
			ts = append(ts, int64(math.RoundToEven(v))-1)
		}
	default:
		return fmt.Errorf("scheduler: timestep_spacing %q not supported", d.cfg.TimestepSpacing)
	}
	var sig []float64
	if d.cfg.UseKarrasSigmas {
		// Karras over the whole training range; timesteps are the rounded
		// inverse.
		sig = karras(float64(d.train[0]), float64(d.train[len(d.train)-1]), n)
		logs := logSigmas(d.train)
		ts = ts[:0]
		for _, s := range sig {
			ts = append(ts, int64(math.RoundToEven(sigmaToT(s, logs))))
		}
	} else {
		for _, t := range ts {
			sig = append(sig, npInterp(float64(t), d.train))
		}
	}
	d.timesteps = ts
	d.sigmas = make([]float32, len(sig)+1)
	for i, s := range sig {
		d.sigmas[i] = float32(s)
	}
	if d.cfg.FinalSigmasType == "sigma_min" {
		d.sigmas[len(sig)] = d.train[0]
	}
	d.prevX0, d.done = nil, 0
	return nil
}

func (d *dpm) Timesteps() []float64 {
	out := make([]float64, len(d.timesteps))
	for i, t := range d.timesteps {
		out[i] = float64(t)
	}
	return out
}

func (d *dpm) Sigmas() []float64                            { return to64(d.sigmas) }
func (d *dpm) InitNoiseSigma() float64                      { return 1 }
func (d *dpm) ScaleModelInput(s []float32, _ int) []float32 { return clone(s) }

// alphaSigma turns a VE sigma into the VP pair (alpha_t, sigma_t).
func alphaSigma(s float32) (alpha, sigma float32) {
	alpha = 1 / f32sqrt(float32(s*s)+1)
	return alpha, s * alpha
}

func lambda(alpha, sigma float32) float32 { return f32log(alpha) - f32log(sigma) }

func (d *dpm) Step(mo, sample []float32, i int, _ []float32) []float32 {
	checkLen("model output", mo, sample)
	n := len(d.timesteps)
	lowerFinal := i == n-1 && (d.cfg.EulerAtFinal || (d.cfg.LowerOrderFinal && n < 15) || d.cfg.FinalSigmasType == "zero")

	// Convert the model output to a data (x0) prediction.
	alphaS0, sigmaS0 := alphaSigma(d.sigmas[i])
	x0 := make([]float32, len(sample))
	for k, x := range sample {
		switch d.cfg.PredictionType {
		case "epsilon":
			x0[k] = (x - float32(sigmaS0*mo[k])) / alphaS0
		case "v_prediction":
			x0[k] = float32(alphaS0*x) - float32(sigmaS0*mo[k])
		default:
			x0[k] = mo[k]
		}
	}

	alphaT, sigmaT := alphaSigma(d.sigmas[i+1])
	lt, ls0 := lambda(alphaT, sigmaT), lambda(alphaS0, sigmaS0)
	h := lt - ls0
	ratio := sigmaT / sigmaS0
	b := alphaT * (f32exp(-h) - 1)
	out := make([]float32, len(sample))
	if d.cfg.SolverOrder == 1 || d.done < 1 || lowerFinal || d.prevX0 == nil {
		// First order (DPM-Solver++ 1 == DDIM in data prediction).
		for k, x := range sample {
			out[k] = float32(ratio*x) - float32(b*x0[k])
		}
	} else {
		// Second order: D1 is the finite difference of the data
		// predictions scaled by the step-size ratio.
		alphaS1, sigmaS1 := alphaSigma(d.sigmas[i-1])
		ls1 := lambda(alphaS1, sigmaS1)
		r0 := (ls0 - ls1) / h
		invR0 := 1 / r0
		var c float32
		if d.cfg.SolverType == "midpoint" {
			c = 0.5 * b
		} else {
			c = alphaT * ((f32exp(-h)-1)/h + 1)
		}
		for k, x := range sample {
			d1 := float32(invR0 * (x0[k] - d.prevX0[k]))
			v := float32(ratio*x) - float32(b*x0[k])
			if d.cfg.SolverType == "midpoint" {
				out[k] = v - float32(c*d1)
			} else {
				out[k] = v + float32(c*d1)
			}
		}
	}
	d.prevX0 = x0
	d.done++
	return out
}

func (d *dpm) AddNoise(original, noise []float32, i int) []float32 {
	checkLen("noise", noise, original)
	a, s := alphaSigma(d.sigmas[i])
	out := make([]float32, len(original))
	for k, x := range original {
		out[k] = float32(a*x) + float32(s*noise[k])
	}
	return out
}

func (d *dpm) StartIndex(strength float64) int { return Img2ImgStart(len(d.timesteps), strength) }
