//go:build cgo

package diffusion

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
)

// refCase is a case.json written by tools/diffusion-ref/generate.py.
type refCase struct {
	Case     string `json:"case"`
	Pipeline string `json:"pipeline"`
	Call     struct {
		Prompt         string   `json:"prompt"`
		NegativePrompt *string  `json:"negative_prompt"`
		Guidance       float64  `json:"guidance_scale"`
		Steps          int      `json:"num_inference_steps"`
		Height         int      `json:"height"`
		Width          int      `json:"width"`
		Strength       *float64 `json:"strength"`
	} `json:"call"`
	Inputs    map[string]string `json:"inputs"`
	Scheduler struct {
		Class  string          `json:"class"`
		Config json.RawMessage `json:"config"`
	} `json:"scheduler"`
	Initial *refArray  `json:"initial_latents"`
	Noise   []refArray `json:"noise"`
	Steps   []refArray `json:"step_latents"`
	Image   refArray   `json:"image"`
}

type refArray struct {
	File  string `json:"file"`
	Shape []int  `json:"shape"`
}

func (a refArray) load(t testing.TB, dir string) []float32 {
	t.Helper()
	b := pipelinetest.ReadFile(t, filepath.Join(dir, a.File))
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

// replay hands out the reference's recorded draws in order.
type replay struct {
	t     testing.TB
	draws [][]float32
}

func (r *replay) Normal(n int) []float32 {
	if len(r.draws) == 0 {
		r.t.Fatalf("the pipeline drew %d more normals than the reference", n)
	}
	d := r.draws[0]
	r.draws = r.draws[1:]
	if len(d) != n {
		r.t.Fatalf("the pipeline drew %d normals where the reference drew %d", n, len(d))
	}
	return d
}

// tinyModel imports testdata/models/<name> into a fresh store and opens it
// on ONNX Runtime's CPU provider.
func tinyModel(t testing.TB, name string) *Model {
	t.Helper()
	st := pipelinetest.Store(t)
	man := pipelinetest.InstallDir(t, st, filepath.Join("testdata", "models", name), weights.Manifest{Name: name, Pipeline: "diffusion"})
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	models := pipelines.NewModels(pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(), Config: pipelines.Config{
		SessionsPerModel: 1, MaxInputBytes: 32 << 20}})
	t.Cleanup(func() { models.Close() })
	m, err := LoadModel(man, st, models)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// readPNG returns an RGB image as NCHW in [-1, 1] (init) or its first
// channel in [0, 1] (mask).
func readPNG(t testing.TB, path string, mask bool) ([]float32, int, int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	W, H := b.Dx(), b.Dy()
	n := 3
	if mask {
		n = 1
	}
	out := make([]float32, n*H*W)
	for y := 0; y < H; y++ {
		for x := 0; x < W; x++ {
			r, g, bb, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
			if mask {
				// PIL's convert("L"): ITU-R 601-2 luma in integers
				l := (uint32(r>>8)*299 + uint32(g>>8)*587 + uint32(bb>>8)*114) / 1000
				out[y*W+x] = float32(l) / 255
				continue
			}
			for c, v := range []uint32{r >> 8, g >> 8, bb >> 8} {
				out[(c*H+y)*W+x] = float32(v)/255*2 - 1
			}
		}
	}
	return out, W, H
}

func maxAbs(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var m float64
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i]-b[i])))
	}
	return m
}

// fp16Tolerance, when set, loosens runCase's bounds (latents, image) for
// float16 exports.
var fp16Tolerance [2]float64

// runCase replays a reference case through Generate and compares the
// latents after every step (1e-3) and the decoded image (2/255).
func runCase(t *testing.T, m *Model, dir string) {
	var c refCase
	b := pipelinetest.ReadFile(t, filepath.Join(dir, "case.json"))
	// Python's json writes -Infinity (DPM-Solver's lambda_min_clipped)
	b = bytes.ReplaceAll(b, []byte("-Infinity"), []byte("-1e308"))
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	m.SchedulerConfig = c.Scheduler.Config
	noise := &replay{t: t}
	if c.Initial != nil {
		noise.draws = append(noise.draws, c.Initial.load(t, dir))
	}
	for _, n := range c.Noise {
		noise.draws = append(noise.draws, n.load(t, dir))
	}
	j := Job{Prompt: c.Call.Prompt, Steps: c.Call.Steps, Guidance: c.Call.Guidance, NumImages: 1,
		Width: c.Call.Width, Height: c.Call.Height, Noise: noise}
	if c.Call.NegativePrompt != nil {
		j.Negative, j.NegativeSet = *c.Call.NegativePrompt, true
	}
	root := filepath.Join("testdata")
	if p, ok := c.Inputs["image"]; ok {
		j.Init, j.Width, j.Height = readPNG(t, filepath.Join(root, p), false)
		j.Strength = *c.Call.Strength
	}
	if p, ok := c.Inputs["mask_image"]; ok {
		j.Mask, _, _ = readPNG(t, filepath.Join(root, p), true)
	}
	var steps [][]float32
	j.StepLatents = func(i int, l []float32) { steps = append(steps, append([]float32(nil), l...)) }
	res, err := m.Generate(t.Context(), j)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != len(c.Steps) {
		t.Fatalf("%d steps, reference %d", len(steps), len(c.Steps))
	}
	var worst float64
	for i, s := range c.Steps {
		d := maxAbs(steps[i], s.load(t, dir))
		worst = math.Max(worst, d)
		if lim := max(1e-3, fp16Tolerance[0]); d > lim {
			t.Errorf("step %d: latents differ by %g", i, d)
		}
	}
	img := maxAbs(res.Images[0], c.Image.load(t, dir))
	t.Logf("%s: latents max |Δ| %.2g over %d steps, image max |Δ| %.2g", c.Case, worst, len(steps), img)
	if img > max(2.0/255, fp16Tolerance[1]) {
		t.Errorf("image differs by %g (> 2/255)", img)
	}
}

// Stable Diffusion 1.5 and SDXL tiny models against diffusers' pipelines,
// for every scheduler, v-prediction, img2img and inpainting.
func TestSDMatchesDiffusers(t *testing.T) {
	for _, family := range []string{"sd15-tiny", "sdxl-tiny"} {
		m := tinyModel(t, family)
		cases, _ := refCases(filepath.Join("testdata", "ref", family))
		if len(cases) == 0 {
			t.Fatalf("no reference cases for %s", family)
		}
		for _, p := range cases {
			dir := filepath.Dir(p)
			t.Run(family+"/"+filepath.Base(dir), func(t *testing.T) {
				if filepath.Base(dir) == "txt2img_pndm" {
					t.Skip("PNDM is not one of the schedulers fal's endpoints offer")
				}
				runCase(t, m, dir)
			})
		}
	}
}

// Decoding in overlapping tiles leaves no seam: the pixel-to-pixel steps
// where tiles meet are no larger than elsewhere. (The whole-image decode is
// not the yardstick: the VAE's mid-block attention and group norms see the
// whole latent, so tiles differ from it everywhere, with real weights too.)
func TestTiledDecode(t *testing.T) {
	m := tinyModel(t, "sd15-tiny")
	const h, w = 40, 56
	// a smooth latent, so that the decode is smooth and a seam would show
	z := make([]float32, 4*h*w)
	for c := 0; c < 4; c++ {
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				z[(c*h+y)*w+x] = float32(math.Sin(float64(x)/7+float64(c)) + math.Cos(float64(y)/9-float64(c)))
			}
		}
	}
	tileLatent, tileOverlap = 24, 8
	defer func() { tileLatent, tileOverlap = 128, 16 }()
	px, err := m.decodeOne(t.Context(), z, h, w)
	if err != nil {
		t.Fatal(err)
	}
	H, W := h*8, w*8
	// columns where a later tile starts (its blend begins) and where an
	// earlier one ends
	border := map[int]bool{}
	for _, x0 := range tileStarts(w, tileLatent, tileOverlap)[1:] {
		border[x0*8] = true
		border[(x0+tileOverlap)*8] = true
	}
	var atB, elsewhere float64
	var nB, nE int
	for c := 0; c < 3; c++ {
		for y := 0; y < H; y++ {
			for x := 1; x < W; x++ {
				d := math.Abs(float64(px[(c*H+y)*W+x] - px[(c*H+y)*W+x-1]))
				if border[x] {
					atB += d
					nB++
				} else {
					elsewhere += d
					nE++
				}
			}
		}
	}
	ratio := (atB / float64(nB)) / (elsewhere / float64(nE))
	t.Logf("tiled decode %d×%d px: mean step at tile borders / elsewhere = %.2f", W, H, ratio)
	if ratio > 1.1 {
		t.Errorf("seams: steps at tile borders are %.2f× the usual", ratio)
	}
}

// A float16 export (UNet and VAE with float16 inputs and outputs), imported
// with Cast nodes at its edges, follows the float32 reference within fp16's
// precision.
func TestFP16Export(t *testing.T) {
	dir := t.TempDir()
	src := pipelinetest.ExpandDir(t, filepath.Join("testdata", "models", "sd15-tiny"))
	fp16 := pipelinetest.ExpandDir(t, filepath.Join("testdata", "models", "sd15-tiny-fp16"))
	err := filepath.WalkDir(src, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if over := filepath.Join(fp16, rel); fileExists(over) {
			p = over
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o755)
		return os.WriteFile(filepath.Join(dir, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := weights.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rewritten := 0
	files, err := st.AddDirWith(dir, "fp16", func(name, path string) error {
		if filepath.Ext(name) != ".onnx" {
			return nil
		}
		changed, err := weights.Float32IO(path)
		if changed {
			rewritten++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if rewritten != 2 {
		t.Fatalf("%d files rewritten, want the UNet and the VAE decoder", rewritten)
	}
	man := weights.Manifest{Name: "fp16", Pipeline: "diffusion", Files: files}
	st.Put(man)
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	models := pipelines.NewModels(pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(), Config: pipelines.Config{
		SessionsPerModel: 1}})
	defer models.Close()
	m, err := LoadModel(man, st, models)
	if err != nil {
		t.Fatal(err)
	}
	// the first latents have σ = 14.6: 0.1 is under 1 % of their scale
	fp16Tolerance = [2]float64{0.1, 4.0 / 255}
	defer func() { fp16Tolerance = [2]float64{} }()
	runCase(t, m, filepath.Join("testdata", "ref", "sd15-tiny", "txt2img_euler"))
}

// refCases lists the case.json files of the reference cases under root
// (each in a folder of its own, stored gzipped or not).
func refCases(root string) ([]string, error) {
	plain, err := filepath.Glob(filepath.Join(root, "*", "case.json"))
	if err != nil {
		return nil, err
	}
	gz, err := filepath.Glob(filepath.Join(root, "*", "case.json.gz"))
	return append(plain, gz...), err
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
