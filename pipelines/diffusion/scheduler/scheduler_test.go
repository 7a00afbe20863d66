package scheduler

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Reference vectors come from tools/diffusion-ref/schedulers.py (diffusers
// 0.36.0, torch 2.4.1). Every value must agree within tol: absolute 1e-6
// for values up to 1 in magnitude, relative 1e-6 above (timesteps reach
// 999 and Euler sigmas 14.6, where a float32 ulp alone is ~1e-6).
const tol = 1e-6

func near(got, want float64) bool {
	return math.Abs(got-want) <= tol*math.Max(1, math.Abs(want))
}

type refInputs struct {
	Sample   []float32   `json:"sample"`
	Original []float32   `json:"original"`
	ModelOut [][]float32 `json:"model_out"`
	Noise    [][]float32 `json:"noise"`
}

type refCheck struct {
	Index  int       `json:"index"`
	Scaled []float32 `json:"scaled"`
	Prev   []float32 `json:"prev"`
}

type refOpts struct {
	Mu          *float64 `json:"mu"`
	ImageSeqLen int      `json:"image_seq_len"`
	LCMStrength float64  `json:"lcm_strength"`
}

type refRun struct {
	Steps          int        `json:"steps"`
	Strength       float64    `json:"strength"`
	Opts           refOpts    `json:"opts"`
	Timesteps      []float64  `json:"timesteps"`
	Sigmas         []float32  `json:"sigmas"`
	InitNoiseSigma float64    `json:"init_noise_sigma"`
	TStart         int        `json:"t_start"`
	Noised         []float32  `json:"noised"`
	Checks         []refCheck `json:"checks"`
}

type refCase struct {
	Diffusers string          `json:"diffusers"`
	Config    json.RawMessage `json:"config"`
	Runs      []refRun        `json:"runs"`
	Img2Img   []refRun        `json:"img2img"`
}

func readJSON(t *testing.T, name string, v any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// worst tracks the largest deviation seen, for the log.
type worst struct {
	diff float64
	what string
}

func (w *worst) cmp64(t *testing.T, what string, got, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d (%v vs %v)", what, len(got), len(want), got, want)
		return
	}
	for i := range want {
		d := math.Abs(got[i]-want[i]) / math.Max(1, math.Abs(want[i]))
		if d > w.diff {
			w.diff, w.what = d, fmt.Sprintf("%s[%d]", what, i)
		}
		if !near(got[i], want[i]) {
			t.Errorf("%s[%d] = %.9g, want %.9g", what, i, got[i], want[i])
			return
		}
	}
}

func (w *worst) cmp32(t *testing.T, what string, got, want []float32) {
	t.Helper()
	w.cmp64(t, what, to64(got), to64(want))
}

func opts(o refOpts) Options {
	return Options{Mu: o.Mu, ImageSeqLen: o.ImageSeqLen, LCMStrength: o.LCMStrength}
}

// chain runs steps from..n-1 feeding each output back in, with the fixed
// model outputs and noises cycling as in the reference script.
func chain(t *testing.T, w *worst, s Scheduler, in refInputs, x []float32, from int, checks []refCheck, what string) {
	t.Helper()
	want := map[int]refCheck{}
	for _, c := range checks {
		want[c.Index] = c
	}
	n := len(s.Timesteps())
	for i := from; i < n; i++ {
		scaled := s.ScaleModelInput(x, i)
		x = s.Step(in.ModelOut[i%len(in.ModelOut)], x, i, in.Noise[i%len(in.Noise)])
		c, ok := want[i]
		if !ok {
			continue
		}
		delete(want, i)
		if c.Scaled != nil {
			w.cmp32(t, fmt.Sprintf("%s scaled@%d", what, i), scaled, c.Scaled)
		}
		w.cmp32(t, fmt.Sprintf("%s prev@%d", what, i), x, c.Prev)
	}
	if len(want) > 0 {
		t.Errorf("%s: checks never reached: %v", what, want)
	}
}

func TestAgainstDiffusers(t *testing.T) {
	var in refInputs
	readJSON(t, "inputs.json", &in)
	files, err := filepath.Glob("testdata/*.json")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		if name == "inputs" || name == "betas" {
			continue
		}
		n++
		t.Run(name, func(t *testing.T) {
			var rc refCase
			readJSON(t, name+".json", &rc)
			runCase(t, in, rc.Config, "", rc)
		})
	}
	if n == 0 {
		t.Fatal("no reference vectors in testdata")
	}
}

func TestAlphasCumprodBitExact(t *testing.T) {
	var ref struct {
		Schedules map[string]struct {
			Config        json.RawMessage `json:"config"`
			AlphasCumprod []float32       `json:"alphas_cumprod"`
		} `json:"schedules"`
	}
	readJSON(t, "betas.json", &ref)
	for name, s := range ref.Schedules {
		t.Run(name, func(t *testing.T) {
			cfg, err := ParseConfig(s.Config, ClassDDIM)
			if err != nil {
				t.Fatal(err)
			}
			ac, err := alphasCumprod(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(ac) != len(s.AlphasCumprod) {
				t.Fatalf("%d values, want %d", len(ac), len(s.AlphasCumprod))
			}
			bad := 0
			for i := range ac {
				if ac[i] != s.AlphasCumprod[i] {
					if bad < 5 {
						t.Errorf("alphas_cumprod[%d] = %.9g, want %.9g", i, ac[i], s.AlphasCumprod[i])
					}
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d values differ", bad, len(ac))
			}
		})
	}
}

// runCase checks every run and img2img entry of rc against a scheduler
// built from cfg (with class, when not empty, overriding _class_name).
func runCase(t *testing.T, in refInputs, cfg []byte, class string, rc refCase) {
	t.Helper()
	var w worst
	build := func() Scheduler {
		s, err := FromJSON(cfg, class)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, r := range rc.Runs {
		s := build()
		what := fmt.Sprintf("n=%d", r.Steps)
		o := opts(r.Opts)
		if r.Opts.ImageSeqLen > 0 {
			// Let the scheduler derive mu from the sequence length; it
			// must come out as the reference's mu to the bit.
			what += fmt.Sprintf(" seq=%d", r.Opts.ImageSeqLen)
			if mu := CalculateShift(r.Opts.ImageSeqLen, s.Config()); r.Opts.Mu == nil || mu != *r.Opts.Mu {
				t.Errorf("%s: mu %v, want %v", what, mu, r.Opts.Mu)
			}
			o.Mu = nil
		}
		if err := s.SetTimesteps(r.Steps, o); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		// A second SetTimesteps must forget the first loop (DPM++ 2M
		// history).
		s.Step(in.ModelOut[1], in.Sample, 0, in.Noise[1])
		if err := s.SetTimesteps(r.Steps, o); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		w.cmp64(t, what+" timesteps", s.Timesteps(), r.Timesteps)
		if r.Sigmas != nil {
			w.cmp64(t, what+" sigmas", s.Sigmas(), to64(r.Sigmas))
		}
		w.cmp64(t, what+" init_noise_sigma", []float64{s.InitNoiseSigma()}, []float64{r.InitNoiseSigma})
		chain(t, &w, s, in, clone(in.Sample), 0, r.Checks, what)
	}
	for _, r := range rc.Img2Img {
		s := build()
		what := fmt.Sprintf("img2img n=%d strength=%g", r.Steps, r.Strength)
		if err := s.SetTimesteps(r.Steps, opts(r.Opts)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		start := s.StartIndex(r.Strength)
		if start != r.TStart {
			t.Fatalf("%s: start %d, want %d", what, start, r.TStart)
		}
		w.cmp64(t, what+" timesteps", s.Timesteps()[start:], r.Timesteps)
		if start == r.Steps {
			continue
		}
		x := s.AddNoise(in.Original, in.Noise[0], start)
		w.cmp32(t, what+" add_noise", x, r.Noised)
		chain(t, &w, s, in, x, start, r.Checks, what)
	}
	t.Logf("diffusers %s: largest deviation %.3g at %s", rc.Diffusers, w.diff, w.what)
}

// TestClassOverride builds schedulers from another class's config, as fal's
// endpoints do with the model folder's scheduler_config.json: the SD 1.5
// Euler config turned into DPM++ 2M, DDIM and LCM must give the vectors
// diffusers gives for from_config of that class.
func TestClassOverride(t *testing.T) {
	var in refInputs
	readJSON(t, "inputs.json", &in)
	var base refCase
	readJSON(t, "euler_sd15.json", &base)
	for _, tc := range []struct{ class, file string }{
		{ClassDPMSolver, "dpmpp2m_sd15"},
		{ClassDDIM, "ddim_sd15"},
		{ClassEulerAncestral, "euler_a_sd15"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var rc refCase
			readJSON(t, tc.file+".json", &rc)
			runCase(t, in, base.Config, tc.class, rc)
		})
	}
}
