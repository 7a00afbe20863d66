//go:build cgo

package diffusiontest_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/diffusion"
	"github.com/falocal/falocal/pipelines/diffusion/diffusiontest"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
)

// load installs a written export in a fresh store and loads it with
// diffusion.LoadModel on ONNX Runtime's CPU provider.
func load(t *testing.T, o diffusiontest.Options) (*diffusion.Model, error) {
	t.Helper()
	dir := t.TempDir()
	if err := diffusiontest.Write(dir, o); err != nil {
		t.Fatal(err)
	}
	st := pipelinetest.Store(t)
	man := pipelinetest.InstallDir(t, st, dir, weights.Manifest{Name: "stub-" + string(o.Family), Pipeline: "diffusion"})
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	models := pipelines.NewModels(pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(), Config: pipelines.Config{
		SessionsPerModel: 1, MaxInputBytes: 32 << 20}})
	t.Cleanup(func() { models.Close() })
	return diffusion.LoadModel(man, st, models)
}

// generate runs text-to-image and image-to-image jobs of two images.
func generate(t *testing.T, m *diffusion.Model, guidance float64) error {
	const W, H = 64, 48
	init := make([]float32, 3*W*H)
	for i := range init {
		init[i] = float32(math.Sin(float64(i) * 0.01))
	}
	for _, j := range []diffusion.Job{
		{Prompt: "a photo of a cat", Steps: 2, Guidance: guidance, NumImages: 2, Width: W, Height: H},
		{Prompt: "a dog", Steps: 3, Guidance: guidance, NumImages: 2, Width: W, Height: H, Init: init, Strength: 0.7},
	} {
		j.Noise = diffusion.NewSeededNoise(1)
		res, err := m.Generate(t.Context(), j)
		if err != nil {
			return err
		}
		if len(res.Images) != 2 || len(res.Images[0]) != W*H*3 {
			t.Fatalf("%d images of %d values", len(res.Images), len(res.Images[0]))
		}
		lo, hi := float32(1), float32(0)
		for _, v := range res.Images[0] {
			lo, hi = min(lo, v), max(hi, v)
		}
		if hi-lo < 0.01 {
			t.Errorf("a flat image: values in [%v, %v]", lo, hi)
		}
	}
	return nil
}

// TestLoadModel: today's loader loads and runs the default variant of
// each family end to end.
func TestLoadModel(t *testing.T) {
	for _, c := range []struct {
		name     string
		o        diffusiontest.Options
		guidance float64
	}{{"sd", sd, 5}, {"sdxl", sdxl, 5}, {"flux-schnell", flux, 0}, {"flux-dev", dev, 3.5}} {
		t.Run(c.name, func(t *testing.T) {
			m, err := load(t, c.o)
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Family) != string(c.o.Family) || m.LatentChannels != c.o.LatentChannels() ||
				m.VAEScale != c.o.VAEScale() || m.VAEShift != c.o.VAEShift() || (c.o.Family == diffusiontest.Flux && m.Guidance != c.o.Guidance) {
				t.Errorf("loaded %+v", m)
			}
			if err := generate(t, m, c.guidance); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestMatchesReference: the default variants declare the inputs and
// outputs of the real exports (testdata/ref/onnx_io.json): names, order,
// dtypes, ranks and the names of dynamic dimensions (the sizes of the
// static ones differ: the stubs are smaller).
func TestMatchesReference(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "testdata", "ref", "onnx_io.json"))
	if err != nil {
		t.Fatal(err)
	}
	type io struct {
		DType string `json:"dtype"`
		Name  string `json:"name"`
		Shape []any  `json:"shape"`
	}
	var ref map[string]map[string]struct{ Inputs, Outputs []io }
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	dtypes := map[string]string{"FLOAT": "float", "INT32": "int32", "INT64": "int64"}
	for model, o := range map[string]diffusiontest.Options{"sd15-tiny": sd, "sdxl-tiny": sdxl, "flux-schnell-tiny": flux, "flux-dev-tiny": dev} {
		dir := t.TempDir()
		if err := diffusiontest.Write(dir, o); err != nil {
			t.Fatal(err)
		}
		for _, c := range o.Components() {
			r, ok := ref[model][c]
			if !ok {
				t.Fatalf("%s has no %s", model, c)
			}
			ins, outs := declared(t, filepath.Join(dir, c, "model.onnx"))
			for _, side := range []struct {
				got  []decl
				want []io
			}{{ins, r.Inputs}, {outs, r.Outputs}} {
				if len(side.got) != len(side.want) {
					t.Errorf("%s %s: %v, reference %v", model, c, side.got, side.want)
					continue
				}
				for i, d := range side.got {
					w := side.want[i]
					ok := d.name == w.Name && dtypes[d.elem.String()] == w.DType && len(d.dims) == len(w.Shape)
					for k := 0; ok && k < len(d.dims); k++ {
						ws, wsym := w.Shape[k].(string)
						gs, gsym := d.dims[k].(string)
						ok = wsym == gsym && ws == gs
					}
					if !ok {
						t.Errorf("%s %s: %s, reference %+v", model, c, d, w)
					}
				}
			}
		}
	}
}
