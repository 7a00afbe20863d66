// Package scheduler holds the denoising schedulers of the diffusion
// pipelines, written to match diffusers (the version named in
// testdata/*.json) step for step: Euler, Euler ancestral, DPM++ 2M, DDIM,
// LCM and flow-match Euler (FLUX).
//
// All schedulers work on flat []float32 latents with per-element
// arithmetic, so the pipeline can hand them any tensor shape. The float32
// arithmetic follows diffusers' torch float32 operation order, so results
// agree to the last bit or two rather than merely "closely".
package scheduler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
)

// Class names as diffusers spells them in scheduler_config.json.
const (
	ClassEuler          = "EulerDiscreteScheduler"
	ClassEulerAncestral = "EulerAncestralDiscreteScheduler"
	ClassDPMSolver      = "DPMSolverMultistepScheduler"
	ClassDDIM           = "DDIMScheduler"
	ClassLCM            = "LCMScheduler"
	ClassFlowMatch      = "FlowMatchEulerDiscreteScheduler"
)

// Config is the subset of diffusers' scheduler configuration these
// schedulers read. Build it with ParseConfig so that fields the JSON leaves
// out get the defaults of the chosen class, as diffusers' from_config does.
type Config struct {
	ClassName string

	NumTrainTimesteps int
	BetaStart         float64
	BetaEnd           float64
	BetaSchedule      string    // "linear" or "scaled_linear"
	TrainedBetas      []float64 // overrides BetaSchedule when set
	PredictionType    string    // "epsilon", "v_prediction" or "sample"
	TimestepSpacing   string    // "linspace", "leading" or "trailing"
	StepsOffset       int

	// Euler / DPM-Solver.
	InterpolationType string // "linear" only
	UseKarrasSigmas   bool
	SigmaMin          *float64 // Karras range override (Euler only)
	SigmaMax          *float64
	FinalSigmasType   string // "zero" or "sigma_min"

	// DDIM / LCM.
	SetAlphaToOne   bool
	ClipSample      bool
	ClipSampleRange float64

	// DPM-Solver.
	SolverOrder      int
	AlgorithmType    string // "dpmsolver++" only
	SolverType       string // "midpoint" or "heun"
	LowerOrderFinal  bool
	EulerAtFinal     bool
	LambdaMinClipped float64

	// LCM.
	OriginalInferenceSteps int
	TimestepScaling        float64

	// Flow match.
	Shift              float64
	UseDynamicShifting bool
	BaseShift          float64
	MaxShift           float64
	BaseImageSeqLen    int
	MaxImageSeqLen     int
	TimeShiftType      string // "exponential" or "linear"

	raw map[string]json.RawMessage
}

// ParseConfig reads a diffusers scheduler_config.json. class, when not
// empty, replaces its _class_name (fal's endpoints pick the scheduler while
// the model folder ships another); the fields the JSON has are kept and the
// rest take the new class's defaults.
func ParseConfig(data []byte, class string) (Config, error) {
	raw := map[string]json.RawMessage{}
	if err := json.Unmarshal(PythonJSON(data), &raw); err != nil {
		return Config{}, fmt.Errorf("scheduler config: %w", err)
	}
	if class == "" {
		if err := json.Unmarshal(raw["_class_name"], &class); err != nil || class == "" {
			return Config{}, fmt.Errorf("scheduler config: no _class_name")
		}
	}
	c := defaults(class)
	c.raw = raw
	set := func(key string, dst any) error {
		v, ok := raw[key]
		// null means "None" in diffusers: keep the class default.
		if !ok || string(v) == "null" {
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("scheduler config %s: %w", key, err)
		}
		return nil
	}
	var sigmaMin, sigmaMax float64
	fields := []struct {
		key string
		dst any
	}{
		{"num_train_timesteps", &c.NumTrainTimesteps},
		{"beta_start", &c.BetaStart},
		{"beta_end", &c.BetaEnd},
		{"beta_schedule", &c.BetaSchedule},
		{"trained_betas", &c.TrainedBetas},
		{"prediction_type", &c.PredictionType},
		{"timestep_spacing", &c.TimestepSpacing},
		{"steps_offset", &c.StepsOffset},
		{"interpolation_type", &c.InterpolationType},
		{"use_karras_sigmas", &c.UseKarrasSigmas},
		{"sigma_min", &sigmaMin},
		{"sigma_max", &sigmaMax},
		{"final_sigmas_type", &c.FinalSigmasType},
		{"set_alpha_to_one", &c.SetAlphaToOne},
		{"clip_sample", &c.ClipSample},
		{"clip_sample_range", &c.ClipSampleRange},
		{"solver_order", &c.SolverOrder},
		{"algorithm_type", &c.AlgorithmType},
		{"solver_type", &c.SolverType},
		{"lower_order_final", &c.LowerOrderFinal},
		{"euler_at_final", &c.EulerAtFinal},
		{"lambda_min_clipped", &c.LambdaMinClipped},
		{"original_inference_steps", &c.OriginalInferenceSteps},
		{"timestep_scaling", &c.TimestepScaling},
		{"shift", &c.Shift},
		{"use_dynamic_shifting", &c.UseDynamicShifting},
		{"base_shift", &c.BaseShift},
		{"max_shift", &c.MaxShift},
		{"base_image_seq_len", &c.BaseImageSeqLen},
		{"max_image_seq_len", &c.MaxImageSeqLen},
		{"time_shift_type", &c.TimeShiftType},
	}
	for _, f := range fields {
		if err := set(f.key, f.dst); err != nil {
			return Config{}, err
		}
	}
	if v, ok := raw["sigma_min"]; ok && string(v) != "null" {
		c.SigmaMin = &sigmaMin
	}
	if v, ok := raw["sigma_max"]; ok && string(v) != "null" {
		c.SigmaMax = &sigmaMax
	}
	return c, nil
}

// WithClass returns the configuration as diffusers' Class.from_config(old
// config) would build it: the JSON's fields with the other class's defaults
// underneath.
func (c Config) WithClass(class string) (Config, error) {
	if c.raw == nil {
		// Built by hand: only the class changes.
		c.ClassName = class
		return c, nil
	}
	data, err := json.Marshal(c.raw)
	if err != nil {
		return Config{}, err
	}
	return ParseConfig(data, class)
}

// defaults are each class's __init__ defaults in diffusers: they differ
// (DDIM clips samples by default, Euler uses a linear beta schedule).
func defaults(class string) Config {
	c := Config{
		ClassName:         class,
		NumTrainTimesteps: 1000,
		BetaStart:         0.0001,
		BetaEnd:           0.02,
		BetaSchedule:      "linear",
		PredictionType:    "epsilon",
		TimestepSpacing:   "linspace",
		InterpolationType: "linear",
		FinalSigmasType:   "zero",
		ClipSampleRange:   1,
		SetAlphaToOne:     true,
		SolverOrder:       2,
		AlgorithmType:     "dpmsolver++",
		SolverType:        "midpoint",
		LowerOrderFinal:   true,
		LambdaMinClipped:  math.Inf(-1),
		Shift:             1,
		BaseShift:         0.5,
		MaxShift:          1.15,
		BaseImageSeqLen:   256,
		MaxImageSeqLen:    4096,
		TimeShiftType:     "exponential",
	}
	switch class {
	case ClassDDIM:
		c.ClipSample = true
		c.TimestepSpacing = "leading"
	case ClassLCM:
		c.BetaStart, c.BetaEnd, c.BetaSchedule = 0.00085, 0.012, "scaled_linear"
		c.OriginalInferenceSteps = 50
		c.TimestepSpacing = "leading"
		c.TimestepScaling = 10
	}
	return c
}

// New builds the scheduler that cfg.ClassName names.
func New(cfg Config) (Scheduler, error) {
	switch cfg.ClassName {
	case ClassEuler, ClassEulerAncestral:
		return newEuler(cfg)
	case ClassDPMSolver:
		return newDPM(cfg)
	case ClassDDIM, ClassLCM:
		return newDDIM(cfg)
	case ClassFlowMatch:
		return newFlow(cfg)
	}
	return nil, fmt.Errorf("scheduler: unsupported class %q", cfg.ClassName)
}

// FromJSON parses scheduler_config.json and builds its scheduler; class
// overrides _class_name when not empty.
func FromJSON(data []byte, class string) (Scheduler, error) {
	cfg, err := ParseConfig(data, class)
	if err != nil {
		return nil, err
	}
	return New(cfg)
}

// PythonJSON rewrites the non-standard numbers Python's json module writes
// (diffusers saves DPM-Solver's lambda_min_clipped as -Infinity) into
// values encoding/json reads: ±1e308 and null. Strings are left alone.
func PythonJSON(b []byte) []byte {
	var out []byte
	inStr, esc := false, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inStr {
			out = append(out, c)
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
			continue
		}
		switch {
		case c == '"':
			inStr = true
		case bytes.HasPrefix(b[i:], []byte("-Infinity")):
			out = append(out, "-1e308"...)
			i += len("-Infinity") - 1
			continue
		case bytes.HasPrefix(b[i:], []byte("Infinity")):
			out = append(out, "1e308"...)
			i += len("Infinity") - 1
			continue
		case bytes.HasPrefix(b[i:], []byte("NaN")):
			out = append(out, "null"...)
			i += len("NaN") - 1
			continue
		}
		out = append(out, c)
	}
	return out
}
