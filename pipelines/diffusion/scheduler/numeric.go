package scheduler

import (
	"fmt"
	"math"
)

// alphasCumprod is diffusers' alphas_cumprod: betas as a float32 torch
// linspace, alphas = 1 - betas and their running product, all float32.
func alphasCumprod(c Config) ([]float32, error) {
	n := c.NumTrainTimesteps
	var betas []float32
	switch {
	case c.TrainedBetas != nil:
		betas = make([]float32, len(c.TrainedBetas))
		for i, b := range c.TrainedBetas {
			betas[i] = float32(b)
		}
	case c.BetaSchedule == "linear":
		betas = torchLinspace32(c.BetaStart, c.BetaEnd, n)
	case c.BetaSchedule == "scaled_linear":
		// Latent diffusion's schedule: linear in sqrt(beta).
		betas = torchLinspace32(math.Sqrt(c.BetaStart), math.Sqrt(c.BetaEnd), n)
		for i, b := range betas {
			betas[i] = b * b
		}
	default:
		return nil, fmt.Errorf("scheduler: beta_schedule %q not supported", c.BetaSchedule)
	}
	ac := make([]float32, len(betas))
	// torch's CPU cumprod carries the running product in double and
	// rounds each output to float32.
	prod := 1.0
	for i, b := range betas {
		prod *= float64(1 - b)
		ac[i] = float32(prod)
	}
	return ac, nil
}

// torchLinspace32 is torch.linspace(start, end, n, dtype=float32): the step
// in float32, the first half counted up from start and the second half down
// from end, each value one fused multiply-add (torch's vectorised kernel).
// The float32 product step*i is exact in float64, so the float64 sum
// rounded to float32 gives the fused result (checked bit for bit against
// torch for both SD schedules).
func torchLinspace32(start, end float64, n int) []float32 {
	out := make([]float32, n)
	if n == 1 {
		out[0] = float32(start)
		return out
	}
	s, e := float32(start), float32(end)
	step := (e - s) / float32(n-1)
	half := n / 2
	for i := range out {
		if i < half {
			out[i] = float32(float64(s) + float64(step)*float64(i))
		} else {
			out[i] = float32(float64(e) - float64(step)*float64(n-i-1))
		}
	}
	return out
}

// npLinspace is np.linspace(start, stop, n) in float64 (endpoint
// included unless open).
func npLinspace(start, stop float64, n int, open bool) []float64 {
	out := make([]float64, n)
	div := n - 1
	if open {
		div = n
	}
	if n == 0 {
		return out
	}
	if div == 0 {
		out[0] = start
		return out
	}
	step := (stop - start) / float64(div)
	for i := range out {
		out[i] = float64(float64(i)*step) + start
	}
	if !open {
		out[n-1] = stop
	}
	return out
}

// npArangeDown is np.arange(start, 0, -step) for float step: numpy fills
// start + i*delta with delta taken from the first two values.
func npArangeDown(start, step float64) []float64 {
	n := int(math.Ceil((0 - start) / -step))
	out := make([]float64, max(n, 0))
	delta := (start - step) - start
	for i := range out {
		out[i] = start + float64(float64(i)*delta)
	}
	return out
}

// npInterp is np.interp(x, 0..len(fp)-1, fp) in float64.
func npInterp(x float64, fp []float32) float64 {
	last := len(fp) - 1
	switch {
	case x <= 0:
		return float64(fp[0])
	case x >= float64(last):
		return float64(fp[last])
	}
	j := int(math.Floor(x))
	if float64(j) == x {
		return float64(fp[j])
	}
	slope := (float64(fp[j+1]) - float64(fp[j])) / 1
	return float64(slope*(x-float64(j))) + float64(fp[j])
}

// trainSigmas are sqrt((1 - alphas_cumprod) / alphas_cumprod) in float32,
// ascending with the training timestep.
func trainSigmas(ac []float32) []float32 {
	s := make([]float32, len(ac))
	for i, a := range ac {
		s[i] = f32sqrt((1 - a) / a)
	}
	return s
}

// karras is the Karras et al. (2022) schedule between sigmaMax and
// sigmaMin with rho 7, in float64.
func karras(sigmaMin, sigmaMax float64, n int) []float64 {
	const rho = 7.0
	ramp := npLinspace(0, 1, n, false)
	minInv := math.Pow(sigmaMin, 1/rho)
	maxInv := math.Pow(sigmaMax, 1/rho)
	out := make([]float64, n)
	for i, r := range ramp {
		out[i] = math.Pow(maxInv+float64(r*(minInv-maxInv)), rho)
	}
	return out
}

// sigmaToT maps a sigma back to a fractional training timestep by linear
// interpolation in log sigma (logSigmas ascending, float32 as numpy has
// them).
func sigmaToT(sigma float64, logSigmas []float32) float64 {
	ls := math.Log(math.Max(sigma, 1e-10))
	// diffusers takes argmax of the cumulative count of log_sigmas <= ls:
	// the last such index, or 0 when there is none.
	low := 0
	for j, l := range logSigmas {
		if ls-float64(l) >= 0 {
			low = j
		}
	}
	low = min(low, len(logSigmas)-2)
	lo, hi := float64(logSigmas[low]), float64(logSigmas[low+1])
	w := (lo - ls) / (lo - hi)
	w = math.Min(math.Max(w, 0), 1)
	return float64((1-w)*float64(low)) + float64(w*float64(low+1))
}

func logSigmas(sig []float32) []float32 {
	out := make([]float32, len(sig))
	for i, s := range sig {
		out[i] = f32log(s)
	}
	return out
}

// spacedTimesteps are the "linspace", "leading" and "trailing" spacings
// of Table 2 in Lin et al. 2023 as diffusers computes them, before any
// rounding or casting the caller does.
func spacedTimesteps(c Config, n int) ([]float64, error) {
	T := c.NumTrainTimesteps
	out := make([]float64, 0, n)
	switch c.TimestepSpacing {
	case "linspace":
		ls := npLinspace(0, float64(T-1), n, false)
		for i := n - 1; i >= 0; i-- {
			out = append(out, ls[i])
		}
	case "leading":
		ratio := T / n
		for i := n - 1; i >= 0; i-- {
			out = append(out, float64(i*ratio+c.StepsOffset))
		}
	case "trailing":
		for _, v := range npArangeDown(float64(T), float64(T)/float64(n)) {
			out = append(out, math.RoundToEven(v)-1)
		}
	default:
		return nil, fmt.Errorf("scheduler: timestep_spacing %q not supported", c.TimestepSpacing)
	}
	return out, nil
}
