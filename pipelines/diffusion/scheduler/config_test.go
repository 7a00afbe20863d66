package scheduler

import (
	"math"
	"strings"
	"testing"
)

func TestParseConfigDefaults(t *testing.T) {
	// Fields the JSON lacks take the class's own defaults; null is None.
	const sd = `{"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
		"beta_schedule": "scaled_linear", "steps_offset": 1, "trained_betas": null,
		"skip_prk_steps": true, "sigma_min": null}`
	for _, tc := range []struct {
		class       string
		spacing     string
		clip        bool
		alphaToOne  bool
		origSteps   int
		wantErrPart string
	}{
		{class: ClassEuler, spacing: "linspace", clip: false, alphaToOne: true},
		{class: ClassDDIM, spacing: "leading", clip: true, alphaToOne: true},
		{class: ClassLCM, spacing: "leading", alphaToOne: true, origSteps: 50},
		{class: ClassDPMSolver, spacing: "linspace", alphaToOne: true},
		{class: "", wantErrPart: "PNDMScheduler"},
	} {
		cfg, err := ParseConfig([]byte(sd), tc.class)
		if err != nil {
			t.Fatal(err)
		}
		if tc.wantErrPart != "" {
			if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.wantErrPart) {
				t.Errorf("New(%s) error %v, want one naming %s", cfg.ClassName, err, tc.wantErrPart)
			}
			continue
		}
		if cfg.TimestepSpacing != tc.spacing || cfg.ClipSample != tc.clip || cfg.SetAlphaToOne != tc.alphaToOne ||
			cfg.OriginalInferenceSteps != tc.origSteps || cfg.StepsOffset != 1 || cfg.BetaStart != 0.00085 ||
			cfg.TrainedBetas != nil || cfg.SigmaMin != nil {
			t.Errorf("%s: %+v", tc.class, cfg)
		}
		if _, err := New(cfg); err != nil {
			t.Errorf("%s: %v", tc.class, err)
		}
	}
}

func TestWithClass(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{"_class_name":"DDIMScheduler","clip_sample":false,"timestep_spacing":"trailing"}`), "")
	if err != nil {
		t.Fatal(err)
	}
	e, err := cfg.WithClass(ClassEuler)
	if err != nil {
		t.Fatal(err)
	}
	if e.ClassName != ClassEuler || e.TimestepSpacing != "trailing" || e.ClipSample {
		t.Errorf("WithClass: %+v", e)
	}
	d, _ := ParseConfig([]byte(`{"_class_name":"EulerDiscreteScheduler"}`), "")
	if d, _ = d.WithClass(ClassDDIM); !d.ClipSample || d.TimestepSpacing != "leading" {
		t.Errorf("DDIM defaults not applied: %+v", d)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, json string
		steps      int
		opts       Options
	}{
		{"zero steps", `{"_class_name":"EulerDiscreteScheduler"}`, 0, Options{}},
		{"bad spacing", `{"_class_name":"EulerDiscreteScheduler","timestep_spacing":"odd"}`, 4, Options{}},
		{"flux without mu", `{"_class_name":"FlowMatchEulerDiscreteScheduler","use_dynamic_shifting":true}`, 4, Options{}},
		{"lcm too many steps", `{"_class_name":"LCMScheduler"}`, 51, Options{}},
	} {
		s, err := FromJSON([]byte(tc.json), "")
		if err == nil {
			err = s.SetTimesteps(tc.steps, tc.opts)
		}
		if err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	for _, j := range []string{
		`{"_class_name":"DPMSolverMultistepScheduler","algorithm_type":"sde-dpmsolver++"}`,
		`{"_class_name":"EulerDiscreteScheduler","beta_schedule":"squaredcos_cap_v2"}`,
		`{"_class_name":"EulerDiscreteScheduler","prediction_type":"flow"}`,
		`{"beta_start":0.1}`,
		`not json`,
	} {
		if _, err := FromJSON([]byte(j), ""); err == nil {
			t.Errorf("%s: no error", j)
		}
	}
}

func TestImg2ImgStart(t *testing.T) {
	for _, tc := range []struct {
		n        int
		strength float64
		sd, flux int
	}{
		{50, 0.8, 10, 10},
		{4, 0.6, 2, 1}, // SD truncates n*strength first, FLUX after subtracting
		{28, 0.3, 20, 19},
		{10, 1, 0, 0},
		{10, 0, 10, 10},
		{2, 1.5, 0, 0},
	} {
		if got := Img2ImgStart(tc.n, tc.strength); got != tc.sd {
			t.Errorf("Img2ImgStart(%d, %g) = %d, want %d", tc.n, tc.strength, got, tc.sd)
		}
		if got := FluxImg2ImgStart(tc.n, tc.strength); got != tc.flux {
			t.Errorf("FluxImg2ImgStart(%d, %g) = %d, want %d", tc.n, tc.strength, got, tc.flux)
		}
	}
}

func TestCalculateShift(t *testing.T) {
	c := defaults(ClassFlowMatch)
	for _, tc := range []struct {
		seq int
		mu  float64
	}{{256, 0.5}, {4096, 1.15}, {1024, 0.63}} {
		if got := CalculateShift(tc.seq, c); math.Abs(got-tc.mu) > 1e-12 {
			t.Errorf("CalculateShift(%d) = %v, want %v", tc.seq, got, tc.mu)
		}
	}
}
