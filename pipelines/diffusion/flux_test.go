//go:build cgo

package diffusion

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/pipelines/pipelinetest"
)

// fluxArray is an array ref of a case.json: a raw float32 file, or inline
// integer values (token ids).
type fluxArray struct {
	File   string    `json:"file"`
	Shape  []int     `json:"shape"`
	DType  string    `json:"dtype"`
	Values [][]int64 `json:"values"` // [batch][seq]
	Source string    `json:"source"`
	Step   int       `json:"step"`
}

type fluxCall struct {
	Component string               `json:"component"`
	Index     int                  `json:"index"`
	Inputs    map[string]fluxArray `json:"inputs"`
}

type fluxCase struct {
	dir   string
	Model string `json:"model"`
	Call  struct {
		Prompt            string   `json:"prompt"`
		Height            int      `json:"height"`
		Width             int      `json:"width"`
		Steps             int      `json:"num_inference_steps"`
		Guidance          float64  `json:"guidance_scale"`
		Strength          *float64 `json:"strength"`
		MaxSequenceLength int      `json:"max_sequence_length"`
	} `json:"call"`
	InitialLatents *fluxArray  `json:"initial_latents"`
	Noise          []fluxArray `json:"noise"`
	StepLatents    []fluxArray `json:"step_latents"`
	BeginIndex     *int        `json:"begin_index"`
	Image          fluxArray   `json:"image"`
	Calls          []fluxCall  `json:"component_calls"`
}

func loadFluxCase(t *testing.T, dir string) *fluxCase {
	t.Helper()
	b := pipelinetest.ReadFile(t, filepath.Join(dir, "case.json"))
	c := &fluxCase{dir: dir}
	if err := json.Unmarshal(b, c); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *fluxCase) f32(t *testing.T, a fluxArray) []float32 {
	t.Helper()
	b := pipelinetest.ReadFile(t, filepath.Join(c.dir, a.File))
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	n := 1
	for _, d := range a.Shape {
		n *= d
	}
	if len(out) != n {
		t.Fatalf("%s: %d values for shape %v", a.File, len(out), a.Shape)
	}
	return out
}

// fluxReplay hands out recorded draws in order. A request k times the
// size of the next draw gets k copies of it, so a batch of k identical
// images replays a single-image case.
type fluxReplay struct {
	t     *testing.T
	draws [][]float32
	next  int
}

func (r *fluxReplay) Normal(n int) []float32 {
	r.t.Helper()
	if r.next >= len(r.draws) {
		r.t.Fatalf("noise draw %d (%d values) beyond the %d recorded", r.next, n, len(r.draws))
	}
	d := r.draws[r.next]
	r.next++
	if n%len(d) != 0 {
		r.t.Fatalf("noise draw %d: %d values asked, %d recorded", r.next-1, n, len(d))
	}
	return repeat(d, n/len(d))
}

func fluxMaxAbs(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	m := 0.0
	for i := range a {
		m = max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

// fluxTensorValues reads a traced tensor as float32 (ids converted).
func fluxTensorValues(x *engine.Tensor) []float32 {
	if x.DType == engine.Float32 {
		return slices.Clone(x.F32)
	}
	sz := x.DType.Size()
	out := make([]float32, len(x.Raw)/sz)
	for i := range out {
		if sz == 4 {
			out[i] = float32(int32(binary.LittleEndian.Uint32(x.Raw[4*i:])))
		} else {
			out[i] = float32(int64(binary.LittleEndian.Uint64(x.Raw[8*i:])))
		}
	}
	return out
}

// fluxModel installs testdata/models/<name> in a fresh store and loads it.
func fluxModel(t *testing.T, name string) *Model {
	t.Helper()
	m := tinyModel(t, name)
	if m.Family != Flux {
		t.Fatalf("%s loaded as %s", name, m.Family)
	}
	return m
}

// TestFluxReference replays every FLUX reference case (diffusers 0.36 on
// the tiny random-weight exports) with its recorded noise and checks the
// token ids, the first transformer call's inputs, the latents after every
// step and the decoded image; each case also runs as a batch of two.
func TestFluxReference(t *testing.T) {
	for _, model := range []string{"flux-dev-tiny", "flux-schnell-tiny"} {
		cases, err := refCases(filepath.Join("testdata", "ref", model))
		if err != nil || len(cases) == 0 {
			t.Fatalf("no reference cases for %s: %v", model, err)
		}
		t.Run(model, func(t *testing.T) {
			m := fluxModel(t, model)
			for _, cj := range cases {
				c := loadFluxCase(t, filepath.Dir(cj))
				for _, batch := range []int{1, 2} {
					t.Run(fmt.Sprintf("%s/batch%d", filepath.Base(c.dir), batch), func(t *testing.T) {
						checkFluxCase(t, m, c, batch)
					})
				}
			}
		})
	}
}

func checkFluxCase(t *testing.T, m *Model, c *fluxCase, batch int) {
	if c.Call.MaxSequenceLength != 0 && m.t5MaxLen() != c.Call.MaxSequenceLength {
		t.Errorf("T5 length %d, case used %d", m.t5MaxLen(), c.Call.MaxSequenceLength)
	}
	C, h, w := m.LatentChannels, c.Call.Height/vaeFactor, c.Call.Width/vaeFactor
	noise := &fluxReplay{t: t}
	j := Job{Prompt: c.Call.Prompt, Width: c.Call.Width, Height: c.Call.Height, Steps: c.Call.Steps,
		Guidance: c.Call.Guidance, NumImages: batch, Noise: noise}
	if c.InitialLatents != nil {
		// The case passed packed latents=; Go draws them unpacked.
		noise.draws = append(noise.draws, fluxUnpack(c.f32(t, *c.InitialLatents), 1, C, h, w))
	}
	for _, n := range c.Noise {
		noise.draws = append(noise.draws, c.f32(t, n))
	}
	var calls = map[string][]fluxCall{}
	for _, cc := range c.Calls {
		calls[cc.Component] = append(calls[cc.Component], cc)
	}
	if c.Call.Strength != nil {
		j.Strength = *c.Call.Strength
		// The tensor diffusers handed the VAE encoder (the preprocessed PNG).
		j.Init = c.f32(t, calls["vae_encode"][0].Inputs["sample"])
	}

	var steps []int
	worstIn, worstStep := 0.0, 0.0
	seen := map[string]int{}
	trace := &fluxTrace{
		call: func(component string, feeds map[string]*tensorT) {
			k := seen[component]
			seen[component]++
			if k >= len(calls[component]) {
				t.Errorf("%s call %d not in the reference", component, k)
				return
			}
			ref := calls[component][k]
			for name, want := range ref.Inputs {
				got, ok := feeds[name]
				if !ok {
					t.Errorf("%s call %d: no input %s", component, k, name)
					continue
				}
				// Later transformer calls take the previous step's
				// latents, checked below with the step tolerance.
				if component == "transformer" && k > 0 && name == "hidden_states" {
					continue
				}
				gv := fluxTensorValues(got)
				var wv []float32
				if want.Values != nil {
					for _, row := range want.Values {
						for _, v := range row {
							wv = append(wv, float32(v))
						}
					}
				} else {
					wv = c.f32(t, want)
				}
				// Batch rows of batch-invariant inputs repeat the case's row.
				if len(gv) == batch*len(wv) && want.Shape[0] == 1 {
					wv = repeat(wv, batch)
				}
				e := fluxMaxAbs(gv, wv)
				worstIn = max(worstIn, e)
				if want.Values != nil && e != 0 || e > 1e-4 {
					t.Errorf("%s call %d input %s: max abs error %g (shape %v, want %v)", component, k, name, e, got.Shape, want.Shape)
				}
			}
		},
		step: func(i int, latents []float32) {
			k := len(steps)
			steps = append(steps, i)
			if k >= len(c.StepLatents) {
				t.Errorf("step %d beyond the %d recorded", i, len(c.StepLatents))
				return
			}
			want := repeat(c.f32(t, c.StepLatents[k]), batch)
			e := fluxMaxAbs(latents, want)
			worstStep = max(worstStep, e)
			if e > 1e-3 {
				t.Errorf("latents after step %d: max abs error %g", i, e)
			}
		},
	}
	var progress [][2]int
	j.Progress = func(s, total int) { progress = append(progress, [2]int{s, total}) }

	j.fluxTrace = trace
	res, err := m.Generate(t.Context(), j)
	if err != nil {
		t.Fatal(err)
	}
	if noise.next != len(noise.draws) {
		t.Errorf("used %d of %d recorded noise draws", noise.next, len(noise.draws))
	}
	begin := 0
	if c.BeginIndex != nil {
		begin = *c.BeginIndex
	}
	if len(steps) != len(c.StepLatents) || len(steps) > 0 && steps[0] != begin {
		t.Errorf("ran steps %v, reference ran %d from %d", steps, len(c.StepLatents), begin)
	}
	for k, p := range progress {
		if p != [2]int{k + 1, len(c.StepLatents)} {
			t.Errorf("progress %v", progress)
			break
		}
	}
	for _, name := range []string{"text_encoder", "text_encoder_2", "transformer"} {
		if seen[name] != len(calls[name]) {
			t.Errorf("%d %s calls, reference %d", seen[name], name, len(calls[name]))
		}
	}
	if len(res.Images) != batch || res.Width != c.Call.Width || res.Height != c.Call.Height {
		t.Fatalf("%d images %d×%d", len(res.Images), res.Width, res.Height)
	}
	want := c.f32(t, c.Image)
	worstImg := 0.0
	for k, img := range res.Images {
		e := fluxMaxAbs(img, want)
		worstImg = max(worstImg, e)
		if e > 2.0/255 {
			t.Errorf("image %d: max abs error %g (%.2f/255)", k, e, e*255)
		}
	}
	for _, k := range []string{"text", "denoise", "vae"} {
		if _, ok := res.Timings[k]; !ok {
			t.Errorf("no %q timing", k)
		}
	}
	t.Logf("max abs error: transformer/encoder inputs %.3g, step latents %.3g, image %.3g (%.3f/255)", worstIn, worstStep, worstImg, worstImg*255)
}

// Packing is a permutation whose inverse is unpacking; token k's channel
// block holds the 2×2 patch at (2·row, 2·col), as _pack_latents lays it out.
func TestFluxPack(t *testing.T) {
	B, C, h, w := 2, 3, 4, 6
	x := make([]float32, B*C*h*w)
	for i := range x {
		x[i] = float32(i)
	}
	p := fluxPack(x, B, C, h, w)
	if got := fluxUnpack(p, B, C, h, w); !slices.Equal(got, x) {
		t.Fatal("unpack(pack(x)) != x")
	}
	// batch 1, token (row 1, col 2), channel 2, patch (dy 1, dx 0).
	b, row, col, c, dy, dx := 1, 1, 2, 2, 1, 0
	tok := row*(w/2) + col
	got := p[(b*(h/2)*(w/2)+tok)*C*4+c*4+dy*2+dx]
	want := x[((b*C+c)*h+2*row+dy)*w+2*col+dx]
	if got != want {
		t.Fatalf("packed value %g, want %g", got, want)
	}
	ids := fluxImageIDs(2, 3)
	if !slices.Equal(ids[3*4:3*5], []float32{0, 1, 1}) {
		t.Fatalf("img_ids row 4 = %v", ids[12:15])
	}
}
